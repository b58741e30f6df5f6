//! A cap on what the tar parser may read while it looks for the next
//! entry. The `tar` crate reads a GNU long name or long link (`L`, `K`)
//! and a PAX header (`x`) whole into memory, whatever size its header
//! claims: a small gzip stream or a sparse file can make root allocate
//! gigabytes. Rather than parse the archive a second time (a second parser
//! can be made to disagree with the first), the reader under the parser
//! counts: between the entries berth is handed, the parser may read at most
//! [`MAX_BETWEEN_ENTRIES`] bytes (headers, long names, PAX records, and the
//! data of entries berth skips); past that the read fails and so does the
//! layer. Entry data that berth itself reads is not counted.

use std::cell::Cell;
use std::io::{self, Read, Seek, SeekFrom};
use std::rc::Rc;

/// The most the parser may read between two entries (real archives need a
/// few kilobytes: a header, a long name, a PAX record).
pub const MAX_BETWEEN_ENTRIES: u64 = 8 << 20;

/// A reader that, while its [`Budget`] is open, fails once the budget is spent.
pub struct Capped<R> {
    inner: R,
    left: Rc<Cell<Option<u64>>>,
}

/// The budget of a [`Capped`] reader.
pub struct Budget(Rc<Cell<Option<u64>>>);

/// Wraps `inner`; the budget is closed (nothing counted) until
/// [`Budget::next_entry`] opens it.
pub fn capped<R>(inner: R) -> (Capped<R>, Budget) {
    let left = Rc::new(Cell::new(None));
    (
        Capped {
            inner,
            left: left.clone(),
        },
        Budget(left),
    )
}

impl Budget {
    /// Runs `find` (the parser's search for the next entry) with a fresh
    /// budget of [`MAX_BETWEEN_ENTRIES`] bytes.
    pub fn next_entry<T>(&self, find: impl FnOnce() -> T) -> T {
        self.0.set(Some(MAX_BETWEEN_ENTRIES));
        let found = find();
        self.0.set(None);
        found
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.left.get() else {
            return self.inner.read(buf);
        };
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "more than {} MiB of tar headers, long names or PAX records before an entry: refused",
                    MAX_BETWEEN_ENTRIES >> 20
                ),
            ));
        }
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(Some(left - n as u64));
        Ok(n)
    }
}

impl<R: Seek> Seek for Capped<R> {
    /// Seeking over data reads nothing: not counted.
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(data: &[u8], seek: bool) -> io::Result<Vec<String>> {
        let (reader, budget) = capped(io::Cursor::new(data));
        let mut archive = tar::Archive::new(reader);
        let mut names = Vec::new();
        if seek {
            let mut entries = archive.entries_with_seek()?;
            while let Some(entry) = budget.next_entry(|| entries.next()) {
                names.push(entry?.path()?.display().to_string());
            }
        } else {
            let mut entries = archive.entries()?;
            while let Some(entry) = budget.next_entry(|| entries.next()) {
                let mut entry = entry?;
                io::copy(&mut entry, &mut io::sink())?;
                names.push(entry.path()?.display().to_string());
            }
        }
        Ok(names)
    }

    fn long_name_archive(claimed: u64, present: usize) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(claimed);
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.resize(512 + present, b'a');
        data
    }

    #[test]
    fn honest_archives_pass_long_names_pax_and_big_files_included() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(300));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        b.append_pax_extensions([("path", &b"pax/named/file"[..])])
            .unwrap();
        let big = vec![7u8; (MAX_BETWEEN_ENTRIES as usize) * 2];
        let mut h = tar::Header::new_ustar();
        h.set_size(big.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "short", &big[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "after", &b"z"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let expected = vec![long, "pax/named/file".to_string(), "after".to_string()];
        assert_eq!(names(&data, false).unwrap(), expected);
        assert_eq!(names(&data, true).unwrap(), expected);
    }

    #[test]
    fn a_huge_long_name_is_refused_before_it_is_all_read() {
        for seek in [false, true] {
            let data = long_name_archive(3 << 30, (MAX_BETWEEN_ENTRIES as usize) + 4096);
            let err = names(&data, seek).unwrap_err();
            assert!(err.to_string().contains("long names"), "{err}");
        }
    }

    /// A raw header block, as hostile archives write them.
    fn raw_header(
        name: &[u8],
        kind: u8,
        size_field: [u8; 12],
        magic: &[u8],
        ext: Option<u8>,
    ) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(&size_field);
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = kind;
        h[257..257 + magic.len()].copy_from_slice(magic);
        if let Some(ext) = ext {
            h[482] = ext;
            h[483..495].copy_from_slice(b"00000000000\0");
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn octal(n: u64) -> [u8; 12] {
        let mut f = [0u8; 12];
        f[..12].copy_from_slice(format!("{n:011o}\0").as_bytes());
        f
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut n = body.len() + 1;
        while n.to_string().len() + body.len() != n {
            n += 1;
        }
        format!("{n}{body}").into_bytes()
    }

    fn padded(mut data: Vec<u8>) -> Vec<u8> {
        data.resize(data.len().div_ceil(512) * 512, 0);
        data
    }

    /// The three ways an outside review made a second, shadowing parser
    /// disagree with the tar crate (a GNU sparse header with isextended 2,
    /// two PAX size records, an old-style `x` entry): each hides a 3 GiB
    /// long name from a shadow parser. The budget sees the bytes read.
    #[test]
    fn a_long_name_hidden_from_a_second_parser_is_still_refused() {
        let mut base256 = [0u8; 12];
        base256[0] = 0x80;
        base256[8..].copy_from_slice(&(3u32 << 30).to_be_bytes());
        let long = raw_header(b"././@LongLink", b'L', base256, b"ustar  \0", None);
        let ustar = b"ustar\x0000";
        let pax = padded([pax_record("size", "0"), pax_record("size", "1024")].concat());
        let v7 = padded(pax_record("size", "512"));
        let prefixes: Vec<Vec<u8>> = vec![
            raw_header(b"s", b'S', octal(0), b"ustar  \0", Some(2)),
            [
                raw_header(b"pax", b'x', octal(pax.len() as u64), ustar, None),
                pax.clone(),
                raw_header(b"a", b'0', octal(0), b"ustar  \0", None),
            ]
            .concat(),
            [
                raw_header(b"x", b'x', octal(v7.len() as u64), &[0; 8], None),
                v7.clone(),
                raw_header(b"a", b'0', octal(0), b"ustar  \0", None),
            ]
            .concat(),
        ];
        for (i, prefix) in prefixes.into_iter().enumerate() {
            let mut data = prefix;
            data.extend_from_slice(&long);
            data.resize(data.len() + MAX_BETWEEN_ENTRIES as usize + (1 << 20), 0);
            for seek in [false, true] {
                let err = names(&data, seek).expect_err("accepted");
                assert!(
                    err.to_string().contains("long names"),
                    "case {i}, seek {seek}: {err}"
                );
            }
        }
    }
}
