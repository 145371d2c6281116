//! `push_tag` and `pop_tag` over any chunk size, offset and length: never panic, refuse
//! without touching the chunk, and a push followed by a pop gives back the original bytes.
#![no_main]

use bridge_common::wire::EthernetFrame;
use bridge_user::vlan::{pop_tag, push_tag, PortMode, VlanSet};
use libfuzzer_sys::fuzz_target;
use vwire_fuzz::Cursor;

/// An offset or a length: usually near the chunk, sometimes any `usize` at all.
fn position(c: &mut Cursor<'_>, size: usize) -> usize {
    match c.u8() % 8 {
        0 => {
            let b: [u8; 8] = std::array::from_fn(|_| c.u8());
            usize::try_from(u64::from_le_bytes(b)).unwrap_or(usize::MAX)
        }
        1 => usize::MAX - usize::from(c.u8()),
        _ => usize::from(c.u16()) % (size + 64),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let size = usize::from(c.u16()) % 4097;
    let offset = position(&mut c, size);
    let len = position(&mut c, size);
    let vlan = c.vlan();
    let fill = c.rest();
    let orig: Vec<u8> = (0..size)
        .map(|i| {
            fill.get(i % fill.len().max(1))
                .copied()
                .unwrap_or(i.to_le_bytes()[0])
        })
        .collect();

    // Popping arbitrary bytes never panics; refusing leaves the chunk alone.
    let mut popped = orig.clone();
    if pop_tag(&mut popped, offset, len).is_none() {
        assert_eq!(popped, orig, "a refused pop changed the chunk");
    }

    let mut chunk = orig.clone();
    let Some((o, l)) = push_tag(&mut chunk, offset, len, vlan) else {
        assert_eq!(chunk, orig, "a refused push changed the chunk");
        return;
    };
    assert_eq!((o + 4, l), (offset, len + 4));
    assert_eq!(
        chunk[..o],
        orig[..o],
        "push touched the headroom before the tag"
    );
    assert_eq!(
        chunk[o..o + 12],
        orig[offset..offset + 12],
        "MACs moved wrong"
    );
    assert_eq!(chunk[o + 12..o + 14], [0x81, 0x00]);
    assert_eq!(
        u16::from_be_bytes([chunk[o + 14], chunk[o + 15]]),
        vlan.get(),
        "TCI"
    );
    assert_eq!(chunk[o + 16..], orig[offset + 12..], "payload moved");
    // A trunk carrying the VLAN accepts the pushed frame as that VLAN, tagged.
    let trunk = PortMode::Trunk {
        allowed: std::iter::once(vlan).collect::<VlanSet>(),
        native: None,
    };
    if chunk[o + 6] & 1 == 0 && chunk[o + 6..o + 12] != [0; 6] {
        let ing = trunk
            .classify(&EthernetFrame::new_unchecked(&chunk[o..o + l]))
            .expect("a pushed frame classifies on a trunk carrying its VLAN");
        assert_eq!((ing.vlan, ing.tagged), (vlan, true));
    }
    let (po, pl) = pop_tag(&mut chunk, o, l).expect("a pushed frame pops");
    assert_eq!((po, pl), (offset, len));
    assert_eq!(
        chunk[offset..offset + len],
        orig[offset..offset + len],
        "push then pop did not restore the frame"
    );
});
