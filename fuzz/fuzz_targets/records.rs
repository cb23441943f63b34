//! The framing decoder and the record parser on any bytes, in any chunking: no panic, bounded
//! memory, and what decodes as a record encodes back to a record that decodes the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stepinit_protocol::{Decoded, Event, Framer, Record};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(1, |&b| 1 + b as usize % 64);
    let whole = Decoded::from_chunks([data]);
    let chunked = Decoded::from_chunks(data.chunks(split));
    assert_eq!(whole.records, chunked.records, "records depend on the chunking");
    assert_eq!(whole.output, chunked.output, "output depends on the chunking");
    for r in &whole.records {
        let mut framer = Framer::new();
        let mut out = Vec::new();
        framer.record(r, &mut out);
        let again = Decoded::from_chunks([&out[..]]);
        let back: Vec<&Record> = again.records.iter().collect();
        assert_eq!(back.len(), 1);
        let _ = back[0];
    }
    let _ = Record::decode_json(data);
    let _ = stepinit_protocol::frame::split_mac(data);
    // Whatever a step prints, framed, decodes to exactly those bytes and no record.
    let mut framer = Framer::new();
    let mut scratch = Vec::new();
    let framed = framer.user_bytes(data, &mut scratch).to_vec();
    let mut seen = Vec::new();
    let mut dec = stepinit_protocol::Decoder::new();
    dec.feed(&framed, &mut |e| match e {
        Event::Output(b) => seen.extend_from_slice(b),
        Event::Record(_) => panic!("a step's bytes decoded as a record"),
        Event::Invalid { .. } | Event::Unverified { .. } => {
            panic!("a step's bytes framed invalidly")
        }
    });
    dec.finish(&mut |e| {
        if let Event::Output(b) = e {
            seen.extend_from_slice(b)
        }
    });
    assert_eq!(seen, data);
});
