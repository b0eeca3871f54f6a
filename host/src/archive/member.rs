//! One gzip member as the packer writes it, and finding members again in
//! a stream so that a restore can inflate them on every core.
//!
//! Each member is a standard gzip member (RFC 1952) whose header carries an
//! extra field (`FEXTRA`, as BGZF does) with the member's own length:
//!
//! ```text
//! 1f 8b 08 04 | mtime 0 | xfl | os ff | xlen 8 | 'V' 'M' len 4 | u32 member length
//! raw deflate ... | crc32 | isize
//! ```
//!
//! `gzip` and `tar -xzf` skip the field; Vigil reads it to cut the stream
//! into members without inflating them. Archives written before the field
//! existed, or by other tools, have no such header: they are inflated on
//! one thread as before.
//!
//! Owns only the byte layout; never reads a file or decides what a damaged
//! member means for a restore.

use std::io::{self, Read, Write};

/// The fixed header of a framed member: 10 bytes of gzip header, 2 of
/// `XLEN`, 8 of the extra subfield.
const HEADER_LEN: usize = 20;
const TRAILER_LEN: usize = 8;
/// The extra subfield's id: "Vigil Member".
const SUBFIELD: [u8; 2] = *b"VM";
const FEXTRA: u8 = 0x04;
/// `OS` byte: unknown, so archives do not depend on where they were written.
const OS_UNKNOWN: u8 = 0xff;

/// Members bigger than this, compressed or inflated, are inflated on the
/// reading thread as a plain gzip stream: the packer writes 1 MiB blocks,
/// and the cap keeps what parallel inflating holds in memory bounded even
/// for an archive that claims huge members.
pub(super) const MAX_PARALLEL_MEMBER: usize = 4 << 20;

/// `data` as one framed gzip member.
pub(super) fn compress(data: &[u8], level: flate2::Compression) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    out.extend_from_slice(&[0x1f, 0x8b, 0x08, FEXTRA, 0, 0, 0, 0]);
    out.push(match level.level() {
        9 => 2,
        1 => 4,
        _ => 0,
    });
    out.push(OS_UNKNOWN);
    out.extend_from_slice(&8u16.to_le_bytes());
    out.extend_from_slice(&SUBFIELD);
    out.extend_from_slice(&4u16.to_le_bytes());
    // The length, filled in once the deflate data is written.
    out.extend_from_slice(&[0; 4]);
    let mut deflate = flate2::write::DeflateEncoder::new(out, level);
    deflate.write_all(data)?;
    let mut out = deflate.finish()?;
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    let len = u32::try_from(out.len())
        .map_err(|_| io::Error::other("a gzip member longer than 4 GiB"))?;
    out[16..20].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// What comes next in a gzip stream.
#[derive(Debug)]
pub(super) enum Next {
    /// A whole framed member, small enough to inflate in parallel.
    Member(Member),
    /// No framed member here (an older archive, another tool's, or a
    /// member too big): the bytes already read, to be put back in front
    /// of the rest of the stream and inflated in order.
    Unframed(Vec<u8>),
    /// The stream ended cleanly between members.
    End,
}

/// A framed member's bytes, header to trailer.
#[derive(Debug)]
pub(super) struct Member(Vec<u8>);

/// Reads the next member of `input`. Errors are the input's own, or a
/// framed member cut short.
pub(super) fn next(input: &mut impl Read) -> io::Result<Next> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(input, &mut header)?;
    if got == 0 {
        return Ok(Next::End);
    }
    let head = &header[..got];
    let Some(len) = framed_len(head) else {
        return Ok(Next::Unframed(head.to_vec()));
    };
    if len < HEADER_LEN + TRAILER_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a gzip member says it is {len} bytes long"),
        ));
    }
    let mut bytes = Vec::with_capacity(len.min(MAX_PARALLEL_MEMBER));
    bytes.extend_from_slice(head);
    if len > MAX_PARALLEL_MEMBER {
        return Ok(Next::Unframed(bytes));
    }
    bytes.resize(len, 0);
    let got = read_full(input, &mut bytes[HEADER_LEN..])?;
    if got < len - HEADER_LEN {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "a gzip member is cut short ({} of {len} bytes)",
                HEADER_LEN + got
            ),
        ));
    }
    let member = Member(bytes);
    if member.inflated_len() > MAX_PARALLEL_MEMBER {
        return Ok(Next::Unframed(member.0));
    }
    Ok(Next::Member(member))
}

/// The member length a framed header records, if `head` is one.
fn framed_len(head: &[u8]) -> Option<usize> {
    let head: &[u8; HEADER_LEN] = head.try_into().ok()?;
    let fixed = head[..4] == [0x1f, 0x8b, 0x08, FEXTRA]
        && head[10..12] == 8u16.to_le_bytes()
        && head[12..14] == SUBFIELD
        && head[14..16] == 4u16.to_le_bytes();
    fixed.then(|| u32::from_le_bytes([head[16], head[17], head[18], head[19]]) as usize)
}

impl Member {
    /// The size its trailer promises once inflated (`ISIZE`).
    pub(super) fn inflated_len(&self) -> usize {
        let t = &self.0[self.0.len() - 4..];
        u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize
    }

    /// Bytes held: the member and, once inflated, its data.
    pub(super) fn weight(&self) -> usize {
        self.0.len() + self.inflated_len()
    }

    /// Inflates the member and checks it against its trailer: every
    /// deflate byte used, the promised size, the crc32.
    pub(super) fn inflate(&self) -> Result<Vec<u8>, String> {
        let body = &self.0[HEADER_LEN..self.0.len() - TRAILER_LEN];
        let trailer = &self.0[self.0.len() - TRAILER_LEN..];
        let want_crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let want_len = self.inflated_len();
        // One byte of room beyond the promise, so a member that inflates to
        // more is caught instead of cut.
        let mut out = Vec::with_capacity(want_len + 1);
        let mut inflater = flate2::Decompress::new(false);
        let status = inflater
            .decompress_vec(body, &mut out, flate2::FlushDecompress::Finish)
            .map_err(|e| format!("deflate data: {e}"))?;
        if status != flate2::Status::StreamEnd {
            return Err(if out.len() > want_len {
                format!("a gzip member inflates to more than the {want_len} bytes its trailer says")
            } else {
                "a gzip member's deflate data ends too soon".into()
            });
        }
        if inflater.total_in() as usize != body.len() {
            return Err("a gzip member has bytes after its deflate data".into());
        }
        if out.len() != want_len {
            return Err(format!(
                "a gzip member inflates to {} bytes, its trailer says {want_len}",
                out.len()
            ));
        }
        let mut crc = flate2::Crc::new();
        crc.update(&out);
        if crc.sum() != want_crc {
            return Err("a gzip member fails its crc32".into());
        }
        Ok(out)
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len as u32).map(|i| (i * 31 % 253) as u8).collect()
    }

    fn member(next: Next) -> Member {
        match next {
            Next::Member(m) => m,
            other => panic!("expected a framed member, got {other:?}"),
        }
    }

    #[test]
    fn members_are_plain_gzip_to_any_reader() {
        let data = sample(300_000);
        let mut stream = compress(&data, flate2::Compression::new(6)).unwrap();
        stream.extend(compress(b"second", flate2::Compression::new(6)).unwrap());
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&stream[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), data.len() + 6);
        assert_eq!(&out[..data.len()], &data[..]);
        assert_eq!(&out[data.len()..], b"second");
    }

    #[test]
    fn members_are_found_by_their_length_and_inflate_back() {
        let data = sample(100_000);
        let mut stream = compress(&data, flate2::Compression::new(6)).unwrap();
        stream.extend(compress(b"", flate2::Compression::new(1)).unwrap());
        let mut input = &stream[..];
        let first = member(next(&mut input).unwrap());
        assert_eq!(first.inflated_len(), data.len());
        assert_eq!(first.inflate().unwrap(), data);
        assert_eq!(member(next(&mut input).unwrap()).inflate().unwrap(), b"");
        assert!(matches!(next(&mut input).unwrap(), Next::End));
    }

    #[test]
    fn a_stream_of_another_tool_is_handed_back_unframed() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(b"from tar czf").unwrap();
        let stream = gz.finish().unwrap();
        let mut input = &stream[..];
        match next(&mut input).unwrap() {
            Next::Unframed(head) => {
                assert_eq!(head, stream[..HEADER_LEN]);
                assert_eq!(input, &stream[HEADER_LEN..]);
            }
            other => panic!("{other:?}"),
        }
        // Shorter than a header: handed back as it is.
        let mut tiny = &b"\x1f\x8b"[..];
        assert!(matches!(next(&mut tiny).unwrap(), Next::Unframed(h) if h == b"\x1f\x8b"));
    }

    #[test]
    fn a_cut_member_is_an_error() {
        let stream = compress(&sample(50_000), flate2::Compression::new(6)).unwrap();
        let mut input = &stream[..stream.len() - 1];
        let err = next(&mut input).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn damage_inside_a_member_is_caught_when_inflating() {
        let data = sample(50_000);
        let good = compress(&data, flate2::Compression::new(6)).unwrap();
        // A flipped bit in the deflate data, and one in the crc.
        for at in [HEADER_LEN + 100, good.len() - 6] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            let m = member(next(&mut &bad[..]).unwrap());
            assert!(m.inflate().is_err(), "flip at {at} went unnoticed");
        }
        // An ISIZE that lies (smaller than the data).
        let mut bad = good.clone();
        let at = bad.len() - 4;
        bad[at..].copy_from_slice(&10u32.to_le_bytes());
        let err = member(next(&mut &bad[..]).unwrap()).inflate().unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }

    #[test]
    fn huge_members_are_left_to_the_sequential_reader() {
        let mut header = compress(b"x", flate2::Compression::new(6)).unwrap();
        header[16..20].copy_from_slice(&(MAX_PARALLEL_MEMBER as u32 + 1).to_le_bytes());
        match next(&mut &header[..]).unwrap() {
            Next::Unframed(head) => assert_eq!(head.len(), HEADER_LEN),
            other => panic!("{other:?}"),
        }
    }
}
