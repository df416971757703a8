//! `pytorch_model.bin` read front to back, as a download arrives, without its central directory.
//!
//! torch.save writes each entry with a data descriptor (sizes after the data, zero in the local
//! header), `data.pkl` first. So the reader learns the lengths as it goes: `data.pkl` ends where
//! its pickle program stops, each `data/<key>` storage holds as many bytes as the pickle declares
//! for it, and a small entry ends at the first data descriptor whose CRC-32 and size match what
//! precedes it. Every descriptor is checked against the bytes that came (size and CRC-32), so a
//! corrupted or spliced download is refused rather than loaded.

use std::collections::{HashMap, HashSet};

use super::pickle::Unpickler;
use super::{stored_tensors, PytorchError, StoredTensor};
use crate::error::{Error, Result};
use crate::weights::stream::{Router, TensorInfo, TensorSink};

const LOCAL_HEADER: &[u8; 4] = b"PK\x03\x04";
const DESCRIPTOR: &[u8; 4] = b"PK\x07\x08";
/// A pickle this long is not a state dict of a model anyone can run in a tab.
const MAX_PICKLE: usize = 256 << 20;
/// Entries other than `data.pkl` and storages (`version`, `byteorder`, ...) are a few bytes.
const MAX_SMALL_ENTRY: usize = 1 << 20;
/// The central directory takes about 100 bytes per entry.
const MAX_DIRECTORY: usize = 64 << 20;

fn bad(message: String) -> Error {
    PytorchError::BadArchive(message).into()
}

#[derive(Default)]
pub(crate) struct ZipStream {
    /// Bytes gathered for the current header, pickle, small entry or descriptor.
    buf: Vec<u8>,
    state: Zip,
    /// The top folder, once `data.pkl` is seen (`archive/`).
    prefix: Option<String>,
    names: HashSet<String>,
    tensors: Vec<StoredTensor>,
    /// Storage key -> the tensors that view it.
    views: HashMap<String, Vec<usize>>,
    seen_storages: HashSet<String>,
    /// Bytes of a data descriptor taken while looking for it (see `entry_bytes`).
    carry: Vec<u8>,
    /// A `data/` entry seen before `data.pkl`.
    early_storage: Option<String>,
    /// Where the current entry's local header starts.
    header_at: u64,
    /// Every entry read: name, local header offset, data size (checked against the directory).
    entries: Vec<(String, u64, u64)>,
    /// The central directory and what follows it.
    tail: Vec<u8>,
}

#[derive(Default)]
enum Zip {
    /// Expecting a local file header (or the central directory, which ends the entries).
    #[default]
    Header,
    /// Gathering an entry's name and extra field.
    Names(LocalHeader),
    Entry(Entry),
    /// Gathering the data descriptor after `entry`.
    Descriptor(Entry),
    /// The central directory and what follows: nothing more to read.
    Tail,
}

#[derive(Clone, Copy)]
struct LocalHeader {
    flags: u16,
    method: u16,
    crc: u32,
    compressed: u32,
    size: u32,
    name_len: usize,
    extra_len: usize,
}

struct Entry {
    name: String,
    kind: Kind,
    /// Known from the local header or, for a storage, from the pickle.
    size: Option<u64>,
    done: u64,
    /// A data descriptor follows the data.
    descriptor: bool,
    /// The CRC-32 the local header gives (0 when a descriptor follows).
    crc: u32,
    /// Of the data so far, for the CRC check.
    hasher: crc32fast::Hasher,
    /// Its data is gathered in `buf` (pickle, byteorder, a small entry of unknown size), not
    /// streamed through.
    buffered: bool,
}

enum Kind {
    Pickle,
    Byteorder,
    Storage(String),
    Other,
}

impl ZipStream {
    /// The next bytes, which start at file offset `at`.
    pub(crate) fn push(
        &mut self,
        mut at: u64,
        mut bytes: &[u8],
        router: &mut Option<Router>,
        sink: &mut dyn TensorSink,
    ) -> Result<()> {
        while !bytes.is_empty() {
            let used = self.step(at, bytes, router, sink)?;
            (at, bytes) = (at + used as u64, &bytes[used..]);
        }
        Ok(())
    }

    /// Takes some of `bytes` in the current state; returns how many.
    fn step(&mut self, at: u64, bytes: &[u8], router: &mut Option<Router>, sink: &mut dyn TensorSink) -> Result<usize> {
        match std::mem::take(&mut self.state) {
            Zip::Tail => {
                self.state = Zip::Tail;
                if self.tail.len() + bytes.len() > MAX_DIRECTORY {
                    return Err(bad("the central directory is larger than 64 MiB".into()));
                }
                self.tail.extend_from_slice(bytes);
                Ok(bytes.len())
            }
            Zip::Header => self.header(at, bytes),
            Zip::Names(header) => {
                let used = self.gather(bytes, header.name_len + header.extra_len);
                if self.buf.len() < header.name_len + header.extra_len {
                    self.state = Zip::Names(header);
                    return Ok(used);
                }
                let entry = self.open_entry(&header)?;
                self.buf.clear();
                if entry.size == Some(0) {
                    self.close_entry(entry, router, sink)?;
                } else {
                    self.state = Zip::Entry(entry);
                }
                Ok(used)
            }
            Zip::Entry(mut entry) => {
                let used = self.entry_bytes(&mut entry, bytes, router, sink)?;
                if entry.size == Some(entry.done) {
                    self.close_entry(entry, router, sink)?;
                } else {
                    self.state = Zip::Entry(entry);
                }
                Ok(used)
            }
            Zip::Descriptor(entry) => self.descriptor(entry, bytes),
        }
    }

    /// Moves up to `want - buf.len()` bytes into `buf`; returns how many.
    fn gather(&mut self, bytes: &[u8], want: usize) -> usize {
        let take = want.saturating_sub(self.buf.len()).min(bytes.len());
        self.buf.extend_from_slice(&bytes[..take]);
        take
    }

    /// A local file header, or the central directory that ends the entries.
    fn header(&mut self, at: u64, bytes: &[u8]) -> Result<usize> {
        if self.buf.is_empty() {
            self.header_at = at;
        }
        let used = self.gather(bytes, 4);
        if self.buf.len() < 4 {
            return Ok(used);
        }
        if self.buf[..4] != *LOCAL_HEADER {
            if matches!(&self.buf[..4], b"PK\x01\x02" | b"PK\x05\x06" | b"PK\x06\x06") {
                self.tail = std::mem::take(&mut self.buf);
                self.state = Zip::Tail;
                return Ok(used);
            }
            let header_at = (at + used as u64).saturating_sub(self.buf.len() as u64);
            return Err(bad(format!("no zip entry header at byte {header_at}")));
        }
        let used = used + self.gather(&bytes[used..], 30);
        if self.buf.len() < 30 {
            return Ok(used);
        }
        let b = &self.buf;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let header = LocalHeader {
            flags: u16_at(6),
            method: u16_at(8),
            crc: u32_at(14),
            compressed: u32_at(18),
            size: u32_at(22),
            name_len: u16_at(26) as usize,
            extra_len: u16_at(28) as usize,
        };
        self.buf.clear();
        self.state = Zip::Names(header);
        Ok(used)
    }

    /// Classifies the entry whose names are in `buf`.
    fn open_entry(&mut self, h: &LocalHeader) -> Result<Entry> {
        let name = String::from_utf8_lossy(&self.buf[..h.name_len]).into_owned();
        if !self.names.insert(name.clone()) {
            return Err(bad("duplicate entry names".into()));
        }
        let (mut size, mut compressed) = (h.size as u64, h.compressed as u64);
        if h.size == u32::MAX || h.compressed == u32::MAX {
            (size, compressed) = zip64_sizes(&self.buf[h.name_len..], h, &name)?;
        }
        let descriptor = h.flags & 8 != 0;
        // With a descriptor the local sizes may be zero: unknown until the data ends.
        let known = !descriptor || size != 0 || compressed != 0;
        let stored = h.method == 0 && h.flags & 1 == 0;
        if stored && known && size != compressed {
            return Err(bad(format!("stored entry {name} has inconsistent sizes")));
        }
        let is_pickle = name.strip_suffix("/data.pkl").is_some_and(|top| !top.is_empty() && !top.contains('/'));
        let kind = match &self.prefix {
            None if is_pickle => {
                if let Some(early) = &self.early_storage {
                    return Err(bad(format!(
                        "storage {early} comes before data.pkl (torch.save writes data.pkl first, and a streamed \
                         checkpoint needs it first)"
                    )));
                }
                self.prefix = Some(name[..name.len() - "data.pkl".len()].to_owned());
                Kind::Pickle
            }
            // A storage before data.pkl cannot be routed; it is an error once data.pkl shows up
            // (without one the file is not a checkpoint at all, which `finish` says).
            None if name.contains("/data/") => {
                self.early_storage.get_or_insert(name.clone());
                Kind::Other
            }
            None => Kind::Other,
            Some(prefix) if is_pickle => {
                return Err(bad(format!("several data.pkl entries ({prefix}data.pkl and {name})")));
            }
            Some(prefix) if name == format!("{prefix}byteorder") => Kind::Byteorder,
            Some(prefix) => match name.strip_prefix(&format!("{prefix}data/")) {
                Some(key) => Kind::Storage(key.to_owned()),
                None => Kind::Other,
            },
        };
        if !stored && !matches!(kind, Kind::Other) {
            return Err(PytorchError::CompressedEntry(name).into());
        }
        let size = match &kind {
            _ if known => Some(compressed),
            Kind::Storage(key) => Some(self.declared(key) as u64),
            _ if !stored => return Err(bad(format!("entry {name} is compressed and gives no size before its data"))),
            _ => None,
        };
        if let (Kind::Storage(key), Some(len)) = (&kind, size) {
            for &i in self.views.get(key).into_iter().flatten() {
                self.tensors[i].check_entry(len)?;
            }
            self.seen_storages.insert(key.clone());
        }
        // Storages, and other entries of known size, stream through; the rest is gathered.
        let buffered = match kind {
            Kind::Storage(_) => false,
            Kind::Other => size.is_none(),
            Kind::Pickle | Kind::Byteorder => true,
        };
        Ok(Entry { name, kind, size, done: 0, descriptor, crc: h.crc, hasher: crc32fast::Hasher::new(), buffered })
    }

    /// The bytes a storage holds by the pickle's account (0 if no tensor views it).
    fn declared(&self, key: &str) -> usize {
        self.views.get(key).into_iter().flatten().map(|&i| self.tensors[i].storage_bytes).max().unwrap_or(0)
    }

    /// Takes entry data from `bytes`; returns how many were used.
    fn entry_bytes(
        &mut self,
        entry: &mut Entry,
        bytes: &[u8],
        router: &mut Option<Router>,
        sink: &mut dyn TensorSink,
    ) -> Result<usize> {
        let take = match (entry.size, &entry.kind) {
            (Some(size), _) => (size - entry.done).min(bytes.len() as u64) as usize,
            (None, Kind::Pickle) => bytes.len(),
            // Enough to find the descriptor of an entry of at most MAX_SMALL_ENTRY bytes.
            (None, _) => bytes.len().min((MAX_SMALL_ENTRY + 24 + 1).saturating_sub(self.buf.len())),
        };
        let data = &bytes[..take];
        if entry.buffered {
            self.buf.extend_from_slice(data);
        } else {
            entry.hasher.update(data);
        }
        if let (Kind::Storage(key), Some(router)) = (&entry.kind, router.as_mut()) {
            let at = entry.done as usize;
            for &i in self.views.get(key).into_iter().flatten() {
                let range = &self.tensors[i].bytes;
                let (start, end) = (range.start.max(at), range.end.min(at + take));
                if start < end {
                    router.feed(i, &data[start - at..end - at], sink)?;
                }
            }
        }
        entry.done += take as u64;
        if entry.size.is_some() {
            return Ok(take);
        }
        // No size given: the data ends where the pickle stops, or at a matching descriptor.
        let old = self.buf.len() - take;
        let Some(len) = self.find_end(entry, old, router, sink)? else { return Ok(take) };
        // A descriptor may have begun in bytes taken before: they are its first bytes.
        self.carry = self.buf.get(len..old).map(<[u8]>::to_vec).unwrap_or_default();
        self.buf.truncate(len);
        entry.size = Some(len as u64);
        entry.done = len as u64;
        Ok(len.saturating_sub(old))
    }

    /// Where the data of an entry of unknown size ends, if the bytes in `buf` (the ones from `old`
    /// on just came) show it.
    fn find_end(
        &mut self,
        entry: &Entry,
        old: usize,
        router: &mut Option<Router>,
        sink: &mut dyn TensorSink,
    ) -> Result<Option<usize>> {
        if let Kind::Pickle = entry.kind {
            if self.buf.len() > MAX_PICKLE {
                return Err(PytorchError::LimitExceeded("data.pkl is larger than 256 MiB").into());
            }
            // A pickle ends with STOP ('.'): try only when one came.
            if !self.buf[old..].contains(&b'.') {
                return Ok(None);
            }
            return match Unpickler::new(&self.buf).run_to_stop() {
                Ok((root, len)) => {
                    self.announce(root, router, sink)?;
                    Ok(Some(len))
                }
                Err(PytorchError::Truncated) => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        match descriptor_at(&self.buf, old.saturating_sub(23)) {
            None if self.buf.len() > MAX_SMALL_ENTRY + 24 => {
                Err(bad(format!("entry {} gives no size, and no data descriptor follows within 1 MiB", entry.name)))
            }
            end => Ok(end),
        }
    }

    /// The pickle has run: its tensors are the file's, announced to the sink.
    fn announce(
        &mut self,
        root: super::pickle::Value,
        router: &mut Option<Router>,
        sink: &mut dyn TensorSink,
    ) -> Result<()> {
        self.tensors = stored_tensors(root)?;
        for (i, t) in self.tensors.iter().enumerate() {
            self.views.entry(t.key.clone()).or_default().push(i);
        }
        let infos: Vec<TensorInfo> = self
            .tensors
            .iter()
            .map(|t| TensorInfo { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() })
            .collect();
        *router = Some(Router::begin(&infos, sink)?);
        Ok(())
    }

    /// The entry's data is complete: checks it, then expects its descriptor or the next header.
    fn close_entry(&mut self, mut entry: Entry, router: &mut Option<Router>, sink: &mut dyn TensorSink) -> Result<()> {
        if entry.buffered {
            entry.hasher.update(&self.buf);
        }
        if matches!(entry.kind, Kind::Pickle) && router.is_none() {
            // A pickle whose size the header gave: run it now.
            let root = Unpickler::new(&self.buf).run()?;
            self.announce(root, router, sink)?;
        }
        if let Kind::Byteorder = entry.kind {
            match self.buf.trim_ascii() {
                b"little" => {}
                b"big" => return Err(PytorchError::BigEndian.into()),
                _ => return Err(bad("unknown byteorder".into())),
            }
        }
        self.buf = std::mem::take(&mut self.carry);
        self.entries.push((entry.name.clone(), self.header_at, entry.done));
        if entry.descriptor {
            self.state = Zip::Descriptor(entry);
        } else {
            check_crc(&entry.name, entry.crc, entry.hasher.finalize())?;
            self.state = Zip::Header;
        }
        Ok(())
    }

    /// The data descriptor: optional signature, CRC-32, then both sizes in 4 bytes (8 in zip64).
    fn descriptor(&mut self, entry: Entry, bytes: &[u8]) -> Result<usize> {
        let mut used = self.gather(bytes, 4);
        let start = if self.buf.len() >= 4 && self.buf[..4] == *DESCRIPTOR { 4 } else { 0 };
        if self.buf.len() >= 4 {
            used += self.gather(&bytes[used..], start + 12);
        }
        if self.buf.len() < start + 12 {
            self.state = Zip::Descriptor(entry);
            return Ok(used);
        }
        let word = |buf: &[u8], i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let (crc, size) = (word(&self.buf, start), entry.done);
        if u64::from(word(&self.buf, start + 4)) != size || u64::from(word(&self.buf, start + 8)) != size {
            used += self.gather(&bytes[used..], start + 20);
            if self.buf.len() < start + 20 {
                self.state = Zip::Descriptor(entry);
                return Ok(used);
            }
            let long = |i: usize| u64::from(word(&self.buf, i)) | u64::from(word(&self.buf, i + 4)) << 32;
            let (c, u) = (long(start + 4), long(start + 12));
            if [c, u] != [size; 2] {
                return Err(bad(format!(
                    "entry {}: its data descriptor gives sizes {c} and {u}, but {size} bytes came",
                    entry.name
                )));
            }
        }
        check_crc(&entry.name, crc, entry.hasher.finalize())?;
        self.buf.clear();
        self.state = Zip::Header;
        Ok(used)
    }

    /// The file has ended after `size` bytes.
    pub(crate) fn finish(&self, size: u64, router: Option<&Router>) -> Result<()> {
        if self.prefix.is_none() || (router.is_none() && matches!(self.state, Zip::Tail)) {
            return Err(PytorchError::NoDataPkl.into());
        }
        if !matches!(self.state, Zip::Tail) {
            return Err(bad(format!("the archive ends at byte {size}, before its central directory (truncated)")));
        }
        self.check_directory(size)?;
        match self.tensors.iter().find(|t| !self.seen_storages.contains(&t.key)) {
            Some(t) => Err(PytorchError::MissingStorage(t.key.clone()).into()),
            None => Ok(()),
        }
    }

    /// The central directory must describe the entries the stream read: the same names, each
    /// with its local header where it was and the size that came (what a random-access reader,
    /// trusting the directory, would read).
    fn check_directory(&self, size: u64) -> Result<()> {
        let mut rest = &self.tail[..];
        let mut listed = 0;
        while rest.starts_with(b"PK\x01\x02") {
            if rest.len() < 46 {
                return Err(bad("the central directory is truncated".into()));
            }
            let u16_at = |i: usize| u16::from_le_bytes([rest[i], rest[i + 1]]) as usize;
            let u32_at = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
            let (name_len, extra_len, comment_len) = (u16_at(28), u16_at(30), u16_at(32));
            let end = 46 + name_len + extra_len + comment_len;
            let record = rest.get(..end).ok_or_else(|| bad("the central directory is truncated".into()))?;
            let name = String::from_utf8_lossy(&record[46..46 + name_len]).into_owned();
            let mut fields = [u32_at(24), u32_at(20), u32_at(42)].map(u64::from);
            if fields.contains(&u64::from(u32::MAX)) {
                let mut extra = &record[46 + name_len..46 + name_len + extra_len];
                while extra.len() >= 4 {
                    let (id, len) =
                        (u16::from_le_bytes([extra[0], extra[1]]), u16::from_le_bytes([extra[2], extra[3]]) as usize);
                    let body = extra.get(4..4 + len).unwrap_or_default();
                    if id == 1 {
                        let mut values =
                            body.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
                        for f in fields.iter_mut().filter(|f| **f == u64::from(u32::MAX)) {
                            *f = values.next().unwrap_or(*f);
                        }
                    }
                    extra = extra.get(4 + len..).unwrap_or_default();
                }
            }
            let [uncompressed, compressed, offset] = fields;
            let stored = u16_at(10) == 0;
            if stored && uncompressed != compressed {
                return Err(bad(format!("stored entry {name} has inconsistent sizes")));
            }
            if offset >= size {
                return Err(bad(format!(
                    "entry {name}: its local header at byte {offset} lies past the end of the file"
                )));
            }
            match self.entries.iter().find(|(n, ..)| *n == name) {
                Some((_, at, _)) if *at != offset => {
                    return Err(bad(format!(
                        "entry {name}: the central directory places its local header at byte {offset}, but it is at \
                         byte {at}"
                    )))
                }
                Some((_, at, done)) if *done != compressed => {
                    let past_end = at.saturating_add(compressed) > size;
                    return Err(bad(if past_end {
                        format!("entry {name} extends past the end of the file")
                    } else {
                        format!("entry {name}: the central directory gives {compressed} bytes, but {done} came")
                    }));
                }
                Some(_) => {}
                None => {
                    return Err(bad(format!("the central directory lists {name}, which the archive does not hold")))
                }
            }
            listed += 1;
            rest = &rest[end..];
        }
        // zip64 end record and locator, then the end record, which closes the file.
        if rest.starts_with(b"PK\x06\x06") && rest.len() >= 12 {
            let len = u64::from_le_bytes(rest[4..12].try_into().unwrap_or_default());
            rest = rest.get(12usize.saturating_add(len as usize)..).unwrap_or_default();
        }
        if rest.starts_with(b"PK\x06\x07") {
            rest = rest.get(20..).unwrap_or_default();
        }
        let complete = rest.starts_with(b"PK\x05\x06")
            && rest.len() >= 22
            && rest.len() == 22 + u16::from_le_bytes([rest[20], rest[21]]) as usize;
        if !complete {
            return Err(bad(format!("the archive ends at byte {size}, inside its end records (truncated)")));
        }
        if listed != self.entries.len() {
            return Err(bad(format!(
                "the central directory lists {listed} entries, but the archive holds {}",
                self.entries.len()
            )));
        }
        Ok(())
    }
}

/// The sizes a zip64 extra field gives for the fields the local header set to 0xFFFFFFFF
/// (uncompressed first, then compressed).
fn zip64_sizes(extra: &[u8], h: &LocalHeader, name: &str) -> Result<(u64, u64)> {
    let mut rest = extra;
    while rest.len() >= 4 {
        let (id, len) = (u16::from_le_bytes([rest[0], rest[1]]), u16::from_le_bytes([rest[2], rest[3]]) as usize);
        let body = rest.get(4..4 + len).ok_or_else(|| bad(format!("entry {name}: truncated extra field")))?;
        if id == 1 {
            let mut values = body.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
            let mut next = |given: u32| if given == u32::MAX { values.next() } else { Some(given as u64) };
            let size = next(h.size);
            let compressed = next(h.compressed);
            return size.zip(compressed).ok_or_else(|| bad(format!("entry {name}: zip64 field lacks its sizes")));
        }
        rest = &rest[4 + len..];
    }
    Err(bad(format!("entry {name}: sizes of 0xFFFFFFFF without a zip64 extra field")))
}

/// The first offset from `from` on where a data descriptor for all of `buf[..offset]` starts:
/// its CRC-32 and both sizes must match those bytes.
fn descriptor_at(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find(|&p| {
        let field = |i: usize, n: usize| buf.get(p + i..p + i + n);
        if field(0, 4) != Some(DESCRIPTOR) {
            return false;
        }
        let crc = crc32fast::hash(&buf[..p]).to_le_bytes();
        let short = [(p as u32).to_le_bytes(), (p as u32).to_le_bytes()].concat();
        let long = [(p as u64).to_le_bytes(), (p as u64).to_le_bytes()].concat();
        field(4, 4) == Some(&crc) && (field(8, 8) == Some(&short) || field(8, 16) == Some(&long))
    })
}

fn check_crc(name: &str, expected: u32, actual: u32) -> Result<()> {
    if expected != actual {
        return Err(bad(format!(
            "entry {name}: CRC-32 {actual:08x} instead of {expected:08x} (the file is corrupted, or a \
             download spliced wrong bytes)"
        )));
    }
    Ok(())
}
