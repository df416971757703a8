//! The JavaScript weights bridge: a `Uint8Array` or a `WeightsReader` read one range at a time.

use js_sys::Uint8Array;
use wasm_bindgen::prelude::*;

use crate::error::{Error, Result};
use crate::weights::WeightsFile;

#[wasm_bindgen(typescript_custom_section)]
const WEIGHTS_READER: &str = r#"
/** A weights file read in pieces (e.g. a `File` through `FileReaderSync` in a worker):
 *  `read(offset, length)` returns exactly `length` bytes starting at `offset`. */
export interface WeightsReader {
  size: number;
  read(offset: number, length: number): Uint8Array;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// A `Uint8Array` or a `WeightsReader`.
    #[wasm_bindgen(typescript_type = "Uint8Array | WeightsReader")]
    pub type WeightsInput;
}

/// The weights as JavaScript holds them, read one range at a time.
pub(super) enum JsWeights {
    Bytes(Uint8Array),
    Reader { this: JsValue, read: js_sys::Function, size: u64 },
}

impl JsWeights {
    pub(super) fn new(value: JsValue) -> Result<Self> {
        let bad = || Error::Usage("weights: expected a Uint8Array or a { size, read(offset, length) } reader".into());
        if let Some(bytes) = value.dyn_ref::<Uint8Array>() {
            return Ok(JsWeights::Bytes(bytes.clone()));
        }
        if !value.is_object() {
            return Err(bad());
        }
        let get = |key: &str| js_sys::Reflect::get(&value, &key.into()).map_err(|_| bad());
        let read = get("read")?.dyn_into::<js_sys::Function>().map_err(|_| bad())?;
        let size = get("size")?.as_f64().filter(|s| s.fract() == 0.0 && *s >= 0.0).ok_or_else(bad)?;
        Ok(JsWeights::Reader { this: value, read, size: size as u64 })
    }
}

impl WeightsFile for JsWeights {
    fn size(&self) -> u64 {
        match self {
            JsWeights::Bytes(b) => b.length() as u64,
            JsWeights::Reader { size, .. } => *size,
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset + buf.len() as u64;
        let failed = |message: String| Error::File {
            path: "weights".into(),
            message: format!("bytes {offset}..{end}: {message}"),
        };
        let chunk = match self {
            JsWeights::Bytes(b) => b.subarray(offset as u32, end as u32),
            JsWeights::Reader { this, read, .. } => read
                .call2(this, &(offset as f64).into(), &(buf.len() as f64).into())
                .map_err(|e| failed(format!("the reader failed: {}", js_message(&e))))?
                .dyn_into::<Uint8Array>()
                .map_err(|_| failed("the reader did not return a Uint8Array".into()))?,
        };
        if chunk.length() as usize != buf.len() {
            return Err(failed(format!("got {} bytes", chunk.length())));
        }
        chunk.copy_to(buf);
        Ok(())
    }
}

fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}
