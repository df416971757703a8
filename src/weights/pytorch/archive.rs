//! The zip container of a torch.save checkpoint: where `data.pkl`, `byteorder` and each
//! `data/<key>` storage lie in the file.

use std::collections::HashMap;
use std::ops::Range;

use super::{read, PytorchError, Result};
use crate::weights::WeightsFile;

/// `Read + Seek` over a [`WeightsFile`], for the zip reader.
struct FileCursor<'a> {
    file: &'a dyn WeightsFile,
    pos: u64,
}

impl std::io::Read for FileCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.file.size().saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        self.file.read_at(self.pos, &mut buf[..n]).map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for FileCursor<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let size = self.file.size();
        let pos = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => size.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

// ---------------------------------------------------------------------------------------
// Zip archive
// ---------------------------------------------------------------------------------------

pub(super) struct Archive {
    pub(super) pickle: Range<usize>,
    /// Storage key -> byte range of its `data/<key>` entry in the file.
    pub(super) storages: HashMap<String, Range<usize>>,
}

struct RawEntry {
    name: String,
    range: Range<usize>,
    stored: bool,
}

impl Archive {
    pub(super) fn open(file: &dyn WeightsFile) -> Result<Archive> {
        // torch archives always start with a local file header; checking the magic first
        // gives a clear error for legacy (raw pickle) checkpoints and random files.
        if file.size() < 2 || read(file, &(0..2))? != b"PK" {
            return Err(PytorchError::NotZip);
        }
        let bad = |e: zip::result::ZipError| PytorchError::BadArchive(e.to_string());
        let mut zip = zip::ZipArchive::new(FileCursor { file, pos: 0 }).map_err(bad)?;
        // Duplicate names would let two readers see different contents.
        if zip.has_duplicate_names() {
            return Err(PytorchError::BadArchive("duplicate entry names".into()));
        }
        let mut entries = Vec::with_capacity(zip.len());
        for i in 0..zip.len() {
            // Raw access: we never decompress, we only need where the bytes are.
            let f = zip.by_index_raw(i).map_err(bad)?;
            let Ok(name) = std::str::from_utf8(f.name_raw()) else {
                continue; // cannot be one of the names we look for
            };
            let start = f
                .data_start()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| PytorchError::BadArchive(format!("entry {name} has no data offset")))?;
            let len = usize::try_from(f.compressed_size())
                .map_err(|_| PytorchError::BadArchive(format!("entry {name} is too large")))?;
            let end = start
                .checked_add(len)
                .filter(|&end| end as u64 <= file.size())
                .ok_or_else(|| PytorchError::BadArchive(format!("entry {name} extends past the end of the file")))?;
            let stored = f.compression() == zip::CompressionMethod::Stored && !f.encrypted();
            // A stored entry's two sizes must agree, or its length is ambiguous.
            if stored && f.compressed_size() != f.size() {
                return Err(PytorchError::BadArchive(format!("stored entry {name} has inconsistent sizes")));
            }
            entries.push(RawEntry { name: name.to_owned(), range: start..end, stored });
        }

        // The prefix is whatever single top folder holds data.pkl (`archive/`, `<stem>/`, ...).
        let mut pkls = entries
            .iter()
            .filter(|e| e.name.strip_suffix("/data.pkl").is_some_and(|top| !top.is_empty() && !top.contains('/')));
        let pkl = pkls.next().ok_or(PytorchError::NoDataPkl)?;
        if let Some(other) = pkls.next() {
            return Err(PytorchError::BadArchive(format!(
                "several data.pkl entries ({} and {})",
                pkl.name, other.name
            )));
        }
        let prefix = pkl.name.strip_suffix("data.pkl").unwrap_or_default();
        let data_prefix = format!("{prefix}data/");
        let byteorder_name = format!("{prefix}byteorder");

        let used =
            |e: &&RawEntry| std::ptr::eq(*e, pkl) || e.name == byteorder_name || e.name.starts_with(&data_prefix);
        if let Some(e) = entries.iter().filter(used).find(|e| !e.stored) {
            return Err(PytorchError::CompressedEntry(e.name.clone()));
        }

        // Old torch versions write no byteorder entry; they were little-endian only.
        if let Some(e) = entries.iter().find(|e| e.name == byteorder_name) {
            match read(file, &e.range)?.trim_ascii() {
                b"little" => {}
                b"big" => return Err(PytorchError::BigEndian),
                _ => return Err(PytorchError::BadArchive("unknown byteorder".into())),
            }
        }

        let storages = entries
            .iter()
            .filter_map(|e| {
                let key = e.name.strip_prefix(&data_prefix)?;
                Some((key.to_owned(), e.range.clone()))
            })
            .collect();
        Ok(Archive { pickle: pkl.range.clone(), storages })
    }
}
