//! Smoke.
use wasm_tests::{Host, Scenario, Variant, run};

#[test]
fn smoke() {
    let host = Host::new().unwrap();
    let s = Scenario::new("fill3", Variant::Correct).unwrap();
    let o = run(&host, &s, 1, None).unwrap();
    println!("{}", o.report());
    assert!(o.passed());
}
