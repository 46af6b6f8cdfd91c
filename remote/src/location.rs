//! This defines where a remote is: a URL (`s3://bucket/prefix`,
//! `gs://...`, `az://...`, `file:///path`, `memory://`) and its options,
//! turned into an object store and the prefix inside it. object_store's
//! own parsing drops options it does not know without a word, so a typo
//! (`aws_endpoit_url`) would silently send a cache to the wrong place;
//! here every option must be one the URL's backend knows, or it is an
//! error. Each cloud backend is compiled in by its feature (`aws`, `gcp`,
//! `azure`); `file://` always is.

use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreScheme};

/// Why a remote's URL or options were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// Not a URL.
    #[error("invalid remote URL `{url}`")]
    InvalidUrl {
        /// The text, escaped.
        url: String,
        /// Why.
        #[source]
        source: url::ParseError,
    },
    /// A URL of no object store.
    #[error("unsupported remote URL `{0}`: use s3://, gs://, az:// or file://")]
    Unsupported(String),
    /// A backend this build left out.
    #[error("this build has no {backend} support: rebuild with the `{feature}` feature")]
    NotBuilt {
        /// `S3`, `Google Cloud Storage`, `Azure`.
        backend: &'static str,
        /// The feature that has it.
        feature: &'static str,
    },
    /// An option the URL's backend does not know.
    #[error("unknown {backend} option `{key}`")]
    UnknownOption {
        /// The backend.
        backend: &'static str,
        /// The option, escaped.
        key: String,
    },
    /// An option whose value must be an http(s) URL (an endpoint) is not
    /// one: object_store would panic on it at the first request.
    #[error("the {backend} option `{key}` is `{value}`, which is not an http:// or https:// URL")]
    InvalidEndpoint {
        /// The backend.
        backend: &'static str,
        /// The option, escaped.
        key: String,
        /// Its value, escaped.
        value: String,
    },
    /// The backend refused its configuration.
    #[error("cannot configure the store for `{url}`")]
    Store {
        /// The URL, escaped.
        url: String,
        /// What object_store said.
        #[source]
        source: object_store::Error,
    },
}

/// The store a URL names, with `options` (`aws_endpoint_url`,
/// `aws_allow_http`, ..., case-insensitive, as object_store spells them),
/// and the prefix inside it that the URL's path names. Every option must
/// be one the backend knows; `file://` and `memory://` take none.
pub fn open_store(url: &str, options: &[(String, String)]) -> Result<(Arc<dyn ObjectStore>, String), LocationError> {
    open_store_from(url, options, std::iter::empty())
}

/// [`open_store`], with options from the environment (`ambient`: every
/// variable, say) as well: those the URL's backend knows (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` for S3; `GOOGLE_*` for Google
/// Cloud Storage; `AZURE_*` for Azure) are taken, the others left alone
/// (a shell has many variables that are no option, and `AWS_PROFILE` is one
/// object_store does not read). `explicit` options, which a user wrote out
/// for the remote, must all be known, and override ambient ones.
pub fn open_store_from(
    url: &str,
    explicit: &[(String, String)],
    ambient: impl IntoIterator<Item = (String, String)>,
) -> Result<(Arc<dyn ObjectStore>, String), LocationError> {
    store_spec(url, explicit, ambient)?.open()
}

/// A store's URL and options, checked but not yet opened: opening builds
/// the backend's HTTP client (for S3, TLS roots and all), which a command
/// that never reaches the store should not pay for.
#[derive(Clone, Debug)]
pub struct StoreSpec {
    url: url::Url,
    options: Vec<(String, String)>,
}

/// Checks `url` and its options as [`open_store_from`] does, without
/// opening the store.
pub fn store_spec(
    url: &str,
    explicit: &[(String, String)],
    ambient: impl IntoIterator<Item = (String, String)>,
) -> Result<StoreSpec, LocationError> {
    let shown = || safecache::display::escape(url);
    let parsed = url::Url::parse(url).map_err(|source| LocationError::InvalidUrl { url: shown(), source })?;
    let (scheme, _) = ObjectStoreScheme::parse(&parsed).map_err(|_| LocationError::Unsupported(shown()))?;
    let (backend, known): (&'static str, fn(&str) -> bool) = match scheme {
        ObjectStoreScheme::Local => ("file", |_| false),
        ObjectStoreScheme::Memory => ("memory", |_| false),
        #[cfg(feature = "aws")]
        ObjectStoreScheme::AmazonS3 => ("S3", |k| k.parse::<object_store::aws::AmazonS3ConfigKey>().is_ok()),
        #[cfg(not(feature = "aws"))]
        ObjectStoreScheme::AmazonS3 => return Err(LocationError::NotBuilt { backend: "S3", feature: "aws" }),
        #[cfg(feature = "gcp")]
        ObjectStoreScheme::GoogleCloudStorage => {
            ("Google Cloud Storage", |k| k.parse::<object_store::gcp::GoogleConfigKey>().is_ok())
        }
        #[cfg(not(feature = "gcp"))]
        ObjectStoreScheme::GoogleCloudStorage => {
            return Err(LocationError::NotBuilt { backend: "Google Cloud Storage", feature: "gcp" });
        }
        #[cfg(feature = "azure")]
        ObjectStoreScheme::MicrosoftAzure => ("Azure", |k| k.parse::<object_store::azure::AzureConfigKey>().is_ok()),
        #[cfg(not(feature = "azure"))]
        ObjectStoreScheme::MicrosoftAzure => {
            return Err(LocationError::NotBuilt { backend: "Azure", feature: "azure" });
        }
        _ => return Err(LocationError::Unsupported(shown())),
    };
    if let Some((key, _)) = explicit.iter().find(|(key, _)| !known(&key.to_ascii_lowercase())) {
        return Err(LocationError::UnknownOption { backend, key: safecache::display::escape(key) });
    }
    let env_prefix = match backend {
        "S3" => Some("AWS_"),
        "Google Cloud Storage" => Some("GOOGLE_"),
        "Azure" => Some("AZURE_"),
        _ => None,
    };
    let mut options: Vec<(String, String)> = ambient
        .into_iter()
        .filter(|(key, _)| env_prefix.is_some_and(|p| key.starts_with(p)) && known(&key.to_ascii_lowercase()))
        .filter(|(key, _)| !explicit.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)))
        .collect();
    options.extend(explicit.iter().cloned());
    // An endpoint that is no URL passes object_store's builder and panics
    // at the first request ("request valid"): refuse it here.
    for (key, value) in &options {
        let lower = key.to_ascii_lowercase();
        if (lower.contains("endpoint") || lower.ends_with("_url")) && !is_http_url(value) {
            return Err(LocationError::InvalidEndpoint {
                backend,
                key: safecache::display::escape(key),
                value: safecache::display::escape(value),
            });
        }
    }
    Ok(StoreSpec { url: parsed, options })
}

/// Whether `text` is an absolute http:// or https:// URL with a host.
fn is_http_url(text: &str) -> bool {
    url::Url::parse(text)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()))
}

impl StoreSpec {
    /// The store and the prefix inside it. A cloud backend retries a
    /// failed request twice, within [`RETRY_TIMEOUT`], instead of
    /// object_store's ten within three minutes: a cache whose store is down
    /// must miss quickly, not stall every fill.
    pub fn open(&self) -> Result<(Arc<dyn ObjectStore>, String), LocationError> {
        let refused = |source: object_store::Error| LocationError::Store {
            url: safecache::display::escape(self.url.as_str()),
            source,
        };
        let (scheme, prefix) = ObjectStoreScheme::parse(&self.url).map_err(|e| refused(e.into()))?;
        #[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
        let retry = object_store::RetryConfig {
            backoff: object_store::BackoffConfig::default(),
            max_retries: 2,
            retry_timeout: RETRY_TIMEOUT,
        };
        let options = || self.options.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone()));
        let store: Arc<dyn ObjectStore> = match scheme {
            #[cfg(feature = "aws")]
            ObjectStoreScheme::AmazonS3 => {
                let mut builder = object_store::aws::AmazonS3Builder::new().with_url(self.url.as_str());
                for (key, value) in options() {
                    // Checked by `store_spec`: every name parses.
                    if let Ok(key) = key.parse() {
                        builder = builder.with_config(key, value);
                    }
                }
                Arc::new(builder.with_retry(retry).build().map_err(refused)?)
            }
            #[cfg(feature = "gcp")]
            ObjectStoreScheme::GoogleCloudStorage => {
                let mut builder = object_store::gcp::GoogleCloudStorageBuilder::new().with_url(self.url.as_str());
                for (key, value) in options() {
                    if let Ok(key) = key.parse() {
                        builder = builder.with_config(key, value);
                    }
                }
                Arc::new(builder.with_retry(retry).build().map_err(refused)?)
            }
            #[cfg(feature = "azure")]
            ObjectStoreScheme::MicrosoftAzure => {
                let mut builder = object_store::azure::MicrosoftAzureBuilder::new().with_url(self.url.as_str());
                for (key, value) in options() {
                    if let Ok(key) = key.parse() {
                        builder = builder.with_config(key, value);
                    }
                }
                Arc::new(builder.with_retry(retry).build().map_err(refused)?)
            }
            // Objects read only if they are regular files (`local.rs`).
            ObjectStoreScheme::Local => Arc::new(crate::local::RegularFiles::new()),
            // memory:// (which takes no options).
            _ => Arc::from(object_store::parse_url_opts(&self.url, options()).map_err(refused)?.0),
        };
        Ok((store, prefix.to_string()))
    }
}

/// How long a cloud store's request may be retried.
pub const RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
