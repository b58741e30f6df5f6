//! A guard in front of the tar parser. The `tar` crate reads a GNU long
//! name or long link (`L`, `K`) and a PAX header (`x`) whole into memory,
//! whatever size its header claims: a 4 KiB sparse file (or a small gzip
//! stream) can make root allocate gigabytes. The guard follows the archive
//! block by block, as the parser will, and refuses such an entry larger
//! than a limit before the parser sees it. It tracks PAX `size` records
//! (which override the next header's size) and GNU sparse extension
//! blocks, so it never loses step with the parser.

use std::io::{self, Read, Seek, SeekFrom};

/// The largest long name, long link or PAX header accepted (real ones are
/// a few hundred bytes).
pub const MAX_METADATA_ENTRY: u64 = 1 << 20;

const BLOCK: usize = 512;

enum State {
    /// The next block is a header.
    Header,
    /// `left` bytes of entry data (padded to blocks) come next; the PAX
    /// header being read is kept in `pax`.
    Data { left: u64 },
    /// GNU sparse extension blocks come next, then `data` bytes of data.
    SparseExtension { data: u64 },
}

/// Reads a tar stream through, refusing oversized metadata entries.
pub struct TarGuard<R> {
    inner: R,
    state: State,
    /// A header block read from `inner`, not yet all handed on.
    block: [u8; BLOCK],
    block_len: usize,
    block_served: usize,
    /// The data of the PAX header being read, and its real length.
    pax: Option<(Vec<u8>, usize)>,
    /// A PAX `size` for the next entry.
    next_size: Option<u64>,
}

impl<R: Read> TarGuard<R> {
    /// Guards `inner`.
    pub fn new(inner: R) -> TarGuard<R> {
        TarGuard {
            inner,
            state: State::Header,
            block: [0; BLOCK],
            block_len: 0,
            block_served: 0,
            pax: None,
            next_size: None,
        }
    }

    /// Reads one whole block (or what is left before EOF) into `block`.
    fn fill_block(&mut self) -> io::Result<()> {
        self.block_len = 0;
        self.block_served = 0;
        while self.block_len < BLOCK {
            let n = self.inner.read(&mut self.block[self.block_len..])?;
            if n == 0 {
                break;
            }
            self.block_len += n;
        }
        Ok(())
    }

    /// Looks at the header just read and sets what follows it.
    fn inspect_header(&mut self) -> io::Result<()> {
        if self.block_len < BLOCK || self.block.iter().all(|b| *b == 0) {
            return Ok(()); // end of archive (or a truncated one: the parser says so)
        }
        let header = &self.block;
        let kind = header[156];
        let mut size = header_size(&header[124..136])?;
        let is_metadata = matches!(kind, b'L' | b'K' | b'x' | b'g');
        if !is_metadata {
            if let Some(pax_size) = self.next_size.take() {
                size = pax_size;
            }
        }
        if is_metadata && size > MAX_METADATA_ENTRY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a long name or PAX header entry of {size} bytes (at most {MAX_METADATA_ENTRY}): refused"
                ),
            ));
        }
        let padded = size
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s & !(BLOCK as u64 - 1))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tar size overflow"))?;
        if kind == b'x' {
            self.pax = Some((Vec::with_capacity(size as usize), size as usize));
        }
        self.state = if kind == b'S' && header[482] != 0 {
            State::SparseExtension { data: padded }
        } else {
            State::Data { left: padded }
        };
        Ok(())
    }

    /// A PAX header was read whole: remember its `size` for the next entry.
    fn finish_pax(&mut self) {
        if let Some((data, len)) = self.pax.take() {
            self.next_size = pax_size(&data[..len.min(data.len())]);
        }
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.block_served < self.block_len {
                let n = buf.len().min(self.block_len - self.block_served);
                buf[..n].copy_from_slice(&self.block[self.block_served..self.block_served + n]);
                self.block_served += n;
                return Ok(n);
            }
            match self.state {
                State::Header => {
                    self.fill_block()?;
                    if self.block_len == 0 {
                        return Ok(0);
                    }
                    self.inspect_header()?;
                }
                State::SparseExtension { data } => {
                    self.fill_block()?;
                    if self.block_len == 0 {
                        return Ok(0);
                    }
                    if self.block_len == BLOCK && self.block[504] == 0 {
                        self.state = State::Data { left: data };
                    }
                }
                State::Data { left: 0 } => {
                    self.finish_pax();
                    self.state = State::Header;
                }
                State::Data { left } => {
                    let want = (buf.len() as u64).min(left) as usize;
                    let n = self.inner.read(&mut buf[..want])?;
                    if let Some((data, len)) = &mut self.pax {
                        let room = len.saturating_sub(data.len()).min(n);
                        data.extend_from_slice(&buf[..room]);
                    }
                    self.state = State::Data {
                        left: left - n as u64,
                    };
                    return Ok(n);
                }
            }
        }
    }
}

impl<R: Read + Seek> Seek for TarGuard<R> {
    /// Only what the parser does: skip forward over entry data it did not
    /// read (`SeekFrom::Current`).
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let refuse = || io::Error::new(io::ErrorKind::Unsupported, "tar guard: unexpected seek");
        if self.block_served < self.block_len {
            return Err(refuse());
        }
        match (to, &self.state) {
            (SeekFrom::Current(0), _) => self.inner.seek(to),
            (SeekFrom::Current(n), State::Data { left }) if n > 0 && n as u64 <= *left => {
                if self.pax.is_some() {
                    return Err(refuse());
                }
                let left = left - n as u64;
                let pos = self.inner.seek(to)?;
                self.state = State::Data { left };
                Ok(pos)
            }
            _ => Err(refuse()),
        }
    }
}

/// A header's size field: octal digits, or GNU base-256 (high bit set).
fn header_size(field: &[u8]) -> io::Result<u64> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "tar header size field is malformed",
        )
    };
    if field[0] & 0x80 != 0 {
        if field[0] & 0x40 != 0 {
            return Err(bad()); // negative
        }
        let mut value: u64 = (field[0] & 0x3f) as u64;
        for b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(*b as u64))
                .ok_or_else(bad)?;
        }
        return Ok(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).map_err(|_| bad())?, 8).map_err(|_| bad())
}

/// The `size` record of PAX header data (`LEN key=value\n` records).
fn pax_size(mut data: &[u8]) -> Option<u64> {
    let mut size = None;
    while !data.is_empty() {
        let space = data.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        if len <= space || len > data.len() {
            return size;
        }
        let record = &data[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"size=") {
            size = std::str::from_utf8(value).ok()?.parse().ok();
        }
        data = &data[len..];
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, kind: u8, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(size);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        h
    }

    fn names_through_guard(data: &[u8]) -> io::Result<Vec<String>> {
        let mut archive = tar::Archive::new(TarGuard::new(data));
        let mut names = Vec::new();
        for entry in archive.entries()? {
            let entry = entry?;
            names.push(entry.path()?.display().to_string());
        }
        Ok(names)
    }

    #[test]
    fn honest_archives_pass_unchanged_long_names_and_pax_included() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(300));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_pax_extensions([("path", &b"pax/named/file"[..])])
            .unwrap();
        b.append_data(&mut h, "short", &b"hello"[..]).unwrap();
        let data = b.into_inner().unwrap();
        assert_eq!(
            names_through_guard(&data).unwrap(),
            vec![long, "pax/named/file".to_string()]
        );
        // Byte for byte the same stream.
        let mut copy = Vec::new();
        TarGuard::new(&data[..]).read_to_end(&mut copy).unwrap();
        assert_eq!(copy, data);
    }

    #[test]
    fn a_huge_long_name_entry_is_refused_before_it_is_read() {
        let mut data = header("././@LongLink", b'L', 3 << 30).as_bytes().to_vec();
        data.extend_from_slice(&[b'a'; 4096]); // the rest would be gigabytes
        let err = names_through_guard(&data).unwrap_err();
        assert!(err.to_string().contains("long name or PAX header"), "{err}");
        let mut pax = header("pax", b'x', 2 << 20).as_bytes().to_vec();
        pax.extend_from_slice(&[b'a'; 1024]);
        assert!(names_through_guard(&pax).is_err());
    }

    #[test]
    fn a_pax_size_keeps_the_guard_in_step() {
        // The PAX size (2000) overrides the header's (0): data holding a
        // fake huge long-name header must be read as data, not as a header.
        let fake = header("././@LongLink", b'L', 3 << 30);
        let mut body = fake.as_bytes().to_vec();
        body.resize(2000, b'x');
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"2000"[..])]).unwrap();
        let mut data = b.into_inner().unwrap();
        data.truncate(data.len() - 1024); // drop the end-of-archive blocks
        let mut h = header("file", b'0', 0);
        h.set_size(0);
        h.set_cksum();
        data.extend_from_slice(h.as_bytes());
        data.extend_from_slice(&body);
        data.resize(data.len().div_ceil(512) * 512 + 1024, 0);
        assert_eq!(
            names_through_guard(&data).unwrap(),
            vec!["file".to_string()]
        );
    }

    #[test]
    fn sizes_in_octal_and_base_256() {
        assert_eq!(header_size(b"00000001750\0").unwrap(), 1000);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 5;
        big[10] = 1;
        assert_eq!(header_size(&big).unwrap(), 261);
        assert_eq!(pax_size(b"12 size=999\n"), Some(999));
    }
}
