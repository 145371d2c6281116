//! `BridgeConfig::from_toml` on arbitrary text: never panics, and whatever it accepts obeys
//! the documented limits.
#![no_main]

use std::collections::HashSet;

use bridge_user::config::BridgeConfig;
use bridge_user::vlan::PortMode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = BridgeConfig::from_toml(text) else {
        return;
    };
    assert!((1..=16_777_216).contains(&cfg.fdb_max_entries));
    assert!(cfg.max_macs_per_port >= 1);
    assert!((1024..=1_048_576).contains(&cfg.umem_frames));
    assert!(cfg.ring_size.is_power_of_two() && (64..=16_384).contains(&cfg.ring_size));
    let mut domains = HashSet::new();
    let mut ports = HashSet::new();
    for d in &cfg.domains {
        assert!(!d.name.is_empty(), "empty domain name accepted");
        assert!(
            domains.insert(d.name.clone()),
            "duplicate domain {}",
            d.name
        );
        for p in &d.ports {
            assert!(ports.insert(p.name.clone()), "duplicate port {}", p.name);
            if let PortMode::Trunk { allowed, native } = &p.mode {
                assert!(
                    allowed.iter().next().is_some() || native.is_some(),
                    "trunk {} carries nothing",
                    p.name
                );
            }
        }
    }
});
