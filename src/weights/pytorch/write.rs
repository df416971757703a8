//! Writing a state dict the way `torch.save` does, so that tests and measurements can make
//! authors'-layout checkpoints of every released size without PyTorch: a zip of stored entries,
//! each with a data descriptor after its data (zero sizes in the local header), data aligned to
//! 64 bytes by an extra field, storages in key order as strings ("0", "1", "10", ...) so tensors
//! arrive out of their state-dict order, and zip64 records once offsets pass 4 GiB.

use std::io::{self, Write};

/// Writes `tensors` (in state-dict order) as `pytorch_model.bin` with top folder `folder`;
/// `tensor(i)` gives the i-th tensor when its storage is written, so only one is needed at a time.
pub fn write_state_dict(
    out: &mut dyn Write,
    folder: &str,
    names: &[(String, Vec<usize>)],
    tensor: &mut dyn FnMut(usize) -> Vec<f32>,
) -> io::Result<u64> {
    let mut zip = ZipWriter { out, at: 0, entries: Vec::new() };
    zip.entry(&format!("{folder}/data.pkl"), &mut |w| w.write_all(&pickle(names)))?;
    zip.entry(&format!("{folder}/byteorder"), &mut |w| w.write_all(b"little"))?;
    let mut keys: Vec<usize> = (0..names.len()).collect();
    keys.sort_by_key(|k| k.to_string());
    for k in keys {
        let values = tensor(k);
        zip.entry(&format!("{folder}/data/{k}"), &mut |w| {
            for block in values.chunks(1 << 16) {
                let bytes: Vec<u8> = block.iter().flat_map(|v| v.to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
            Ok(())
        })?;
    }
    zip.entry(&format!("{folder}/version"), &mut |w| w.write_all(b"3\n"))?;
    zip.finish()
}

/// The state-dict pickle (protocol 2): an OrderedDict of `_rebuild_tensor_v2(storage, 0, size,
/// stride, False, OrderedDict())`, tensor `i` viewing storage `"i"` whole.
fn pickle(names: &[(String, Vec<usize>)]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    let global = |p: &mut Vec<u8>, module: &str, name: &str| {
        p.push(b'c');
        p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    };
    let string = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, n: usize| match u32::try_from(n) {
        Ok(n) if n < 1 << 31 => {
            p.push(b'J');
            p.extend_from_slice(&n.to_le_bytes());
        }
        _ => {
            p.extend_from_slice(&[0x8a, 8]);
            p.extend_from_slice(&(n as u64).to_le_bytes());
        }
    };
    global(&mut p, "collections", "OrderedDict");
    p.extend_from_slice(b")R(");
    for (i, (name, shape)) in names.iter().enumerate() {
        string(&mut p, name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.extend_from_slice(b"((");
        string(&mut p, "storage");
        global(&mut p, "torch", "FloatStorage");
        string(&mut p, &i.to_string());
        string(&mut p, "cpu");
        int(&mut p, shape.iter().product());
        p.extend_from_slice(b"tQ");
        int(&mut p, 0);
        p.push(b'(');
        for &d in shape {
            int(&mut p, d);
        }
        p.extend_from_slice(b"t(");
        // Row-major strides: the product of the dimensions after each.
        for k in 0..shape.len() {
            int(&mut p, shape[k + 1..].iter().product());
        }
        p.extend_from_slice(b"t\x89");
        global(&mut p, "collections", "OrderedDict");
        p.extend_from_slice(b")RtR");
    }
    p.extend_from_slice(b"u.");
    p
}

struct ZipWriter<'w> {
    out: &'w mut dyn Write,
    at: u64,
    /// Name, local header offset, size, CRC-32.
    entries: Vec<(String, u64, u64, u32)>,
}

/// Counts and checksums what an entry's writer writes.
struct Counting<'w> {
    out: &'w mut dyn Write,
    bytes: u64,
    crc: crc32fast::Hasher,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.bytes += n as u64;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

const ZIP64_NEEDED: u16 = 45;

impl ZipWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.at += bytes.len() as u64;
        Ok(())
    }

    /// One stored entry with a data descriptor, its data 64-byte aligned as torch aligns it.
    fn entry(&mut self, name: &str, data: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        let offset = self.at;
        let unpadded = offset + 30 + name.len() as u64 + 4;
        let pad = ((64 - unpadded % 64) % 64) as usize;
        let mut header = Vec::with_capacity(30 + name.len() + 4 + pad);
        header.extend_from_slice(b"PK\x03\x04");
        header.extend_from_slice(&ZIP64_NEEDED.to_le_bytes());
        header.extend_from_slice(&0x0808u16.to_le_bytes()); // data descriptor, UTF-8 names
        header.extend_from_slice(&[0; 4]); // stored; time
        header.extend_from_slice(&0x21u16.to_le_bytes()); // 1980-01-01
        header.extend_from_slice(&[0; 12]); // CRC-32 and sizes follow the data
        header.extend_from_slice(&(name.len() as u16).to_le_bytes());
        header.extend_from_slice(&((4 + pad) as u16).to_le_bytes());
        header.extend_from_slice(name.as_bytes());
        header.extend_from_slice(b"FB");
        header.extend_from_slice(&(pad as u16).to_le_bytes());
        header.resize(header.len() + pad, b'Z');
        self.put(&header)?;
        let mut counting = Counting { out: &mut *self.out, bytes: 0, crc: crc32fast::Hasher::new() };
        data(&mut counting)?;
        let (size, crc) = (counting.bytes, counting.crc.finalize());
        self.at += size;
        let mut descriptor = b"PK\x07\x08".to_vec();
        descriptor.extend_from_slice(&crc.to_le_bytes());
        if size >= u32::MAX as u64 {
            descriptor.extend_from_slice(&size.to_le_bytes());
            descriptor.extend_from_slice(&size.to_le_bytes());
        } else {
            descriptor.extend_from_slice(&(size as u32).to_le_bytes());
            descriptor.extend_from_slice(&(size as u32).to_le_bytes());
        }
        self.put(&descriptor)?;
        self.entries.push((name.to_string(), offset, size, crc));
        Ok(())
    }

    /// The central directory and end records (zip64 ones when offsets pass 4 GiB); returns the
    /// file's size.
    fn finish(mut self) -> io::Result<u64> {
        let start = self.at;
        let clip = |v: u64| if v >= u32::MAX as u64 { u32::MAX } else { v as u32 };
        let entries = std::mem::take(&mut self.entries);
        for (name, offset, size, crc) in &entries {
            // Fields past 4 GiB move to a zip64 extra field (sizes first, then the offset).
            let mut zip64 = Vec::new();
            if *size >= u32::MAX as u64 {
                zip64.extend_from_slice(&size.to_le_bytes());
                zip64.extend_from_slice(&size.to_le_bytes());
            }
            if *offset >= u32::MAX as u64 {
                zip64.extend_from_slice(&offset.to_le_bytes());
            }
            let mut record = b"PK\x01\x02".to_vec();
            record.extend_from_slice(&ZIP64_NEEDED.to_le_bytes()); // made by
            record.extend_from_slice(&ZIP64_NEEDED.to_le_bytes()); // needed
            record.extend_from_slice(&0x0808u16.to_le_bytes());
            record.extend_from_slice(&[0; 4]);
            record.extend_from_slice(&0x21u16.to_le_bytes());
            record.extend_from_slice(&crc.to_le_bytes());
            record.extend_from_slice(&clip(*size).to_le_bytes());
            record.extend_from_slice(&clip(*size).to_le_bytes());
            record.extend_from_slice(&(name.len() as u16).to_le_bytes());
            let extra = if zip64.is_empty() { 0 } else { 4 + zip64.len() };
            record.extend_from_slice(&(extra as u16).to_le_bytes());
            record.extend_from_slice(&[0; 10]); // comment length, disk, attributes
            record.extend_from_slice(&clip(*offset).to_le_bytes());
            record.extend_from_slice(name.as_bytes());
            if !zip64.is_empty() {
                record.extend_from_slice(&1u16.to_le_bytes());
                record.extend_from_slice(&(zip64.len() as u16).to_le_bytes());
                record.extend_from_slice(&zip64);
            }
            self.put(&record)?;
        }
        let (n, dir_size) = (entries.len() as u64, self.at - start);
        if start >= u32::MAX as u64 || n >= 0xFFFF {
            let record_at = self.at;
            let mut record = b"PK\x06\x06".to_vec();
            record.extend_from_slice(&44u64.to_le_bytes());
            record.extend_from_slice(&ZIP64_NEEDED.to_le_bytes());
            record.extend_from_slice(&ZIP64_NEEDED.to_le_bytes());
            record.extend_from_slice(&[0; 8]); // disk numbers
            for v in [n, n, dir_size, start] {
                record.extend_from_slice(&v.to_le_bytes());
            }
            record.extend_from_slice(b"PK\x06\x07");
            record.extend_from_slice(&[0; 4]);
            record.extend_from_slice(&record_at.to_le_bytes());
            record.extend_from_slice(&1u32.to_le_bytes());
            self.put(&record)?;
        }
        let mut end = b"PK\x05\x06".to_vec();
        end.extend_from_slice(&[0; 4]);
        let count = n.min(0xFFFF) as u16;
        end.extend_from_slice(&count.to_le_bytes());
        end.extend_from_slice(&count.to_le_bytes());
        end.extend_from_slice(&clip(dir_size).to_le_bytes());
        end.extend_from_slice(&clip(start).to_le_bytes());
        end.extend_from_slice(&[0; 2]);
        self.put(&end)?;
        self.out.flush()?;
        Ok(self.at)
    }
}
