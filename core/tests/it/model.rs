//! A model check: random sequences of operations on a real cache, through
//! [`Cache`] and through a [`Leased`] handle, against a map from key to
//! content. After every step the cache must agree with the map, and no
//! temp or trash may be left behind; pins must make removes fail with
//! `WouldBlock` under `Wait::NoWait`, and any lease or pin must keep `clean`
//! out.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use safecache::{Cache, ErrorKind, Key, Leased, LockMode, Pin, Wait};

use crate::support::{names, new_cache};

const KEYS: [&str; 3] = ["a", "dir/b", "c"];

/// The wait of every operation the model expects to succeed. Not `NoWait`:
/// other tests in this binary fork helper processes, and a child between
/// fork and exec shares every open file description of this process, so a
/// lock this test just released can look held for an instant. Operations
/// the model expects to block use `NoWait`: what blocks them is really held.
const PATIENT: Wait = Wait::Timeout(Duration::from_secs(30));

#[derive(Clone, Debug)]
enum Op {
    /// `get_or_fill` whose filler writes `content`, then succeeds or fails.
    Fill {
        key: usize,
        content: u8,
        ok: bool,
        leased: bool,
    },
    Get {
        key: usize,
        leased: bool,
    },
    Pin {
        key: usize,
        leased: bool,
    },
    /// Drops the oldest pin of `key`, if any.
    Unpin {
        key: usize,
    },
    Remove {
        key: usize,
        leased: bool,
    },
    Gc {
        leased: bool,
    },
    Clean {
        leased: bool,
    },
    /// Takes a shared lease handle (if none is held yet).
    Lease,
    /// Drops the lease handle; pins taken through it keep the lease.
    Unlease,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    prop_oneof![
        4 => (key.clone(), 0u8..4, any::<bool>(), any::<bool>())
            .prop_map(|(key, content, ok, leased)| Op::Fill { key, content, ok, leased }),
        2 => (key.clone(), any::<bool>()).prop_map(|(key, leased)| Op::Get { key, leased }),
        2 => (key.clone(), any::<bool>()).prop_map(|(key, leased)| Op::Pin { key, leased }),
        2 => key.clone().prop_map(|key| Op::Unpin { key }),
        3 => (key, any::<bool>()).prop_map(|(key, leased)| Op::Remove { key, leased }),
        1 => any::<bool>().prop_map(|leased| Op::Gc { leased }),
        1 => any::<bool>().prop_map(|leased| Op::Clean { leased }),
        1 => Just(Op::Lease),
        1 => Just(Op::Unlease),
    ]
}

/// The real cache, the handles this test holds on it, and the model.
struct World {
    cache: Cache,
    leased: Option<Leased>,
    pins: Vec<(usize, Pin)>,
    model: BTreeMap<usize, String>,
}

fn key(i: usize) -> Key {
    Key::new(KEYS[i]).unwrap()
}

impl World {
    /// Whether some handle of this test holds the lease (a lease handle, or
    /// any pin: each holds a shared lease).
    fn lease_held(&self) -> bool {
        self.leased.is_some() || !self.pins.is_empty()
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let via = |leased: bool| leased && self.leased.is_some();
        match *op {
            Op::Fill { key: k, content, ok, leased } => {
                let text = format!("content {content}");
                let filler = |dir: &safecache::FillDir<'_>| {
                    std::fs::write(dir.path().join("data"), &text)?;
                    if ok { Ok(()) } else { Err(std::io::Error::other("the filler failed")) }
                };
                let result = match (via(leased), &self.leased) {
                    (true, Some(l)) => l.get_or_fill(&key(k), PATIENT, filler),
                    _ => self.cache.get_or_fill(&key(k), PATIENT, filler),
                };
                match (self.model.contains_key(&k), ok, result) {
                    (true, _, Ok(filled)) => prop_assert!(!filled.filled, "a present entry is not filled again"),
                    (false, true, Ok(filled)) => {
                        prop_assert!(filled.filled);
                        self.model.insert(k, text.clone());
                    }
                    (false, false, Err(e)) => prop_assert_eq!(e.kind(), ErrorKind::Fill, "{}", e),
                    (present, ok, result) => {
                        prop_assert!(false, "fill (present {present}, ok {ok}) gave {result:?}")
                    }
                }
            }
            Op::Get { key: k, leased } => {
                let got = match (via(leased), &self.leased) {
                    (true, Some(l)) => l.get(&key(k)),
                    _ => self.cache.get(&key(k)),
                };
                prop_assert_eq!(got.unwrap().is_some(), self.model.contains_key(&k));
            }
            Op::Pin { key: k, leased } => {
                let pin = match (via(leased), &self.leased) {
                    (true, Some(l)) => l.pin(&key(k), PATIENT),
                    _ => self.cache.pin(&key(k), PATIENT),
                };
                let pin = pin.unwrap();
                prop_assert_eq!(pin.is_some(), self.model.contains_key(&k));
                if let Some(pin) = pin {
                    self.pins.push((k, pin));
                }
            }
            Op::Unpin { key: k } => {
                if let Some(i) = self.pins.iter().position(|(p, _)| *p == k) {
                    drop(self.pins.remove(i));
                }
            }
            Op::Remove { key: k, leased } => {
                let pinned = self.pins.iter().any(|(p, _)| *p == k);
                let wait = if pinned { Wait::NoWait } else { PATIENT };
                let result = match (via(leased), &self.leased) {
                    (true, Some(l)) => l.remove(&key(k), wait),
                    _ => self.cache.remove(&key(k), wait),
                };
                if pinned {
                    let e = result.expect_err("a pinned entry cannot be removed");
                    prop_assert_eq!(e.kind(), ErrorKind::WouldBlock, "{}", e);
                } else {
                    prop_assert_eq!(result.unwrap(), self.model.remove(&k).is_some());
                }
            }
            Op::Gc { leased } => {
                let report = match (via(leased), &self.leased) {
                    (true, Some(l)) => l.gc(PATIENT),
                    _ => self.cache.gc(PATIENT),
                }
                .unwrap();
                prop_assert!(report.failures.is_empty(), "{:?}", report);
                prop_assert_eq!((report.temps, report.trash), (0, 0), "nothing was left to reclaim");
            }
            Op::Clean { leased } => match (via(leased), &self.leased) {
                (true, Some(l)) => {
                    let e = l.clean(Wait::NoWait).expect_err("clean under a shared lease");
                    prop_assert_eq!(e.kind(), ErrorKind::LeaseConflict, "{}", e);
                }
                _ => {
                    let in_use = self.lease_held();
                    let result = self.cache.clean(if in_use { Wait::NoWait } else { PATIENT });
                    if in_use {
                        let e = result.expect_err("clean while the cache is in use");
                        prop_assert_eq!(e.kind(), ErrorKind::WouldBlock, "{}", e);
                    } else {
                        let report = result.unwrap();
                        prop_assert!(report.failures.is_empty(), "{:?}", report);
                        prop_assert_eq!(report.entries, self.model.len());
                        self.model.clear();
                    }
                }
            },
            Op::Lease => {
                if self.leased.is_none() {
                    self.leased = Some(self.cache.lease(LockMode::Shared, PATIENT).unwrap());
                }
            }
            Op::Unlease => self.leased = None,
        }
        Ok(())
    }

    /// The cache agrees with the model, and nothing is left in `tmp/` or
    /// `trash/`.
    fn check(&self) -> Result<(), TestCaseError> {
        // remove and clean leave their trash; any process reclaims it.
        let mut reclaimed = self.cache.reclaim(false).unwrap();
        // `clean`'s trash is claimed by `clean` until it returns: a process
        // another test forks meanwhile holds a copy of that descriptor, and
        // so the claim, until its exec. Busy only until then.
        for _ in 0..10_000 {
            if reclaimed.busy == 0 || !reclaimed.failures.is_empty() {
                break;
            }
            reclaimed = self.cache.reclaim(false).unwrap();
        }
        prop_assert!(reclaimed.failures.is_empty() && reclaimed.busy == 0, "{:?}", reclaimed);
        for (i, name) in KEYS.iter().enumerate() {
            let entry = self.cache.get(&key(i)).unwrap();
            match (self.model.get(&i), entry) {
                (Some(text), Some(entry)) => {
                    prop_assert_eq!(&std::fs::read_to_string(entry.path().join("data")).unwrap(), text)
                }
                (None, None) => {}
                (want, got) => prop_assert!(false, "`{name}`: model {want:?}, cache {got:?}"),
            }
        }
        let mut stored: Vec<String> = self.cache.entries().unwrap().into_iter().map(|e| e.stored_name).collect();
        stored.sort();
        let mut expected: Vec<String> = self.model.keys().map(|&i| key(i).stored_name().to_string()).collect();
        expected.sort();
        prop_assert_eq!(stored, expected);
        for dir in ["tmp", "trash"] {
            let left = names(&self.cache.path().join(".safecache").join(dir));
            prop_assert!(left.is_empty(), "left in {dir}: {left:?}");
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_cache_agrees_with_a_map(ops in proptest::collection::vec(op(), 1..14)) {
        let (_tmp, cache) = new_cache();
        let mut world = World { cache, leased: None, pins: Vec::new(), model: BTreeMap::new() };
        for op in &ops {
            world.step(op)?;
            world.check()?;
        }
        // Every handle released, gc finds nothing, and clean empties it.
        world.pins.clear();
        world.leased = None;
        let report = world.cache.gc(PATIENT).unwrap();
        prop_assert!(report.failures.is_empty() && report.temps == 0 && report.trash == 0, "{:?}", report);
        world.check()?;
        prop_assert_eq!(world.cache.clean(PATIENT).unwrap().entries, world.model.len());
        world.model.clear();
        world.check()?;
    }
}
