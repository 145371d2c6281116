//! A control-socket request line: deserializing never panics, an accepted request survives
//! a serialize/deserialize round trip, and a port's VLAN spec converts or errors cleanly.
#![no_main]

use bridge_user::control::{Request, VlanSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    let text = serde_json::to_string(&req).expect("a parsed request serializes");
    let again: Request = serde_json::from_str(&text).expect("round trip");
    assert_eq!(again, req);
    if let Request::PortAdd {
        vlan,
        trunk,
        native,
        ..
    } = req
    {
        let _ = VlanSpec {
            vlan,
            trunk,
            native,
        }
        .to_mode();
    }
});
