//! gzip of a scrape without compressing the families at every scrape.
//!
//! A body is the families' text (the same for every scrape until the state
//! changes) followed by the exporter's own families (a kilobyte that
//! changes at each scrape). The families are deflated once, ending with a
//! full flush (byte-aligned, no back-references beyond it); each scrape
//! deflates only its own part as the next, final blocks, and writes the
//! gzip header and trailer around them, the CRC-32 continued from the
//! families'. The result is one ordinary gzip member (RFC 1951/1952).

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// A part of a body, deflated and ready to be followed by more blocks.
pub struct DeflatedPart {
    deflated: Vec<u8>,
    crc: Crc,
}

impl std::fmt::Debug for DeflatedPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeflatedPart({} bytes)", self.deflated.len())
    }
}

/// Raw deflate of `input`, ending with `flush` (`Full`: more blocks may follow; `Finish`: last).
fn deflate(input: &[u8], flush: FlushCompress) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(input.len() / 3 + 256);
    loop {
        if out.capacity() - out.len() < 256 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = usize::try_from(compressor.total_in())
            .unwrap_or(input.len())
            .min(input.len());
        let status = compressor.compress_vec(&input[consumed..], &mut out, flush);
        let all_in = compressor.total_in() as usize == input.len();
        match (status, flush) {
            (Ok(Status::StreamEnd), _) => break,
            // Room was left: the flush is complete.
            (Ok(_), FlushCompress::Full) if all_in && out.capacity() - out.len() >= 256 => break,
            (Ok(_), _) => {}
            // Cannot happen with valid parameters; an empty body is still a valid stream end.
            (Err(_), _) => break,
        }
    }
    out
}

/// Deflates `families` so that scrapes can append their own part.
pub fn deflate_part(families: &[u8]) -> DeflatedPart {
    let mut crc = Crc::new();
    crc.update(families);
    DeflatedPart {
        deflated: deflate(families, FlushCompress::Full),
        crc,
    }
}

/// The gzip member of `part`'s data followed by `tail`.
pub fn gzip(part: &DeflatedPart, tail: &[u8]) -> Vec<u8> {
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let last = deflate(tail, FlushCompress::Finish);
    let mut tail_crc = Crc::new();
    tail_crc.update(tail);
    let mut crc = Crc::new();
    crc.combine(&part.crc);
    crc.combine(&tail_crc);
    let mut out = Vec::with_capacity(HEADER.len() + part.deflated.len() + last.len() + 8);
    out.extend_from_slice(&HEADER);
    out.extend_from_slice(&part.deflated);
    out.extend_from_slice(&last);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_cached_part_and_a_fresh_tail_are_one_gzip_member() {
        let families: Vec<u8> = (0..50_000u32)
            .flat_map(|i| format!("metric_total{{id=\"{i}\"}} {}\n", i * 7).into_bytes())
            .collect();
        let part = deflate_part(&families);
        for tail in [&b""[..], b"# EOF\n", &[b'x'; 100_000]] {
            let body = gzip(&part, tail);
            let mut expected = families.clone();
            expected.extend_from_slice(tail);
            assert_eq!(gunzip(&body), expected);
        }
        let empty = deflate_part(b"");
        assert_eq!(gunzip(&gzip(&empty, b"abc")), b"abc");
        assert_eq!(gunzip(&gzip(&empty, b"")), b"");
    }
}
