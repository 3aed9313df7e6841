//! A small GGUF header reader that checks a model file before llama.cpp sees it.
//!
//! llama.cpp answers every load failure with a null pointer, so the reasons a user can fix
//! (not a GGUF at all, a truncated download, an architecture this build does not know) are
//! found here first: the magic bytes, the key/value header, the tensor table, and whether the
//! file is long enough to hold every tensor the table declares.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// What the header says about a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufInfo {
    pub version: u32,
    /// `general.architecture`, e.g. `qwen2` or `llama`.
    pub architecture: Option<String>,
    pub n_tensors: u64,
    /// Bytes the file must have to hold every tensor (0 when a tensor type is unknown here).
    pub required_bytes: u64,
    pub file_bytes: u64,
}

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Sanity limits: a header bigger than this is corruption, not a model.
const MAX_STRING_BYTES: u64 = 1 << 30;
const MAX_DIMS: u32 = 8;

/// Reads and checks the header of `path`.
pub fn inspect(path: &Path) -> Result<GgufInfo> {
    let file = File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::ModelNotFound {
                path: path.to_path_buf(),
                fix: "pass an existing .gguf file or a model name; `ctxzip model list` shows them"
                    .into(),
            }
        } else {
            Error::io(format!("cannot open model file {}", path.display()), source)
        }
    })?;
    let file_bytes = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
        .len();
    let mut reader = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        pos: 0,
    };
    let corrupt = |detail: String| Error::CorruptGguf {
        path: path.to_path_buf(),
        detail,
    };

    let mut magic = [0u8; 4];
    if reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Err(Error::NotGguf {
            path: path.to_path_buf(),
        });
    }
    let header = parse_header(&mut reader).map_err(|e| corrupt(e.describe(file_bytes)))?;
    let data_start = header.end_pos.div_ceil(header.alignment) * header.alignment;
    let required_bytes = match header.data_bytes {
        Some(0) => header.end_pos,
        Some(data_bytes) => data_start + data_bytes,
        None => 0,
    };
    if required_bytes > file_bytes {
        return Err(corrupt(format!(
            "the file is {file_bytes} bytes but its tensors need {required_bytes} bytes"
        )));
    }
    Ok(GgufInfo {
        version: header.version,
        architecture: header.architecture,
        n_tensors: header.n_tensors,
        required_bytes,
        file_bytes,
    })
}

struct Header {
    version: u32,
    architecture: Option<String>,
    n_tensors: u64,
    alignment: u64,
    end_pos: u64,
    /// Extent of the tensor data section, `None` when some tensor type has no size here.
    data_bytes: Option<u64>,
}

enum ParseError {
    Eof(u64),
    Bad(String),
}

impl ParseError {
    fn describe(&self, file_bytes: u64) -> String {
        match self {
            ParseError::Eof(pos) => {
                format!("the header ends early (at byte {pos} of {file_bytes})")
            }
            ParseError::Bad(detail) => detail.clone(),
        }
    }
}

struct Reader<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Reader<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ParseError> {
        self.inner
            .read_exact(buf)
            .map_err(|_| ParseError::Eof(self.pos))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, ParseError> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, ParseError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn skip(&mut self, n: u64) -> Result<(), ParseError> {
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|_| ParseError::Eof(self.pos))?;
        self.pos += copied;
        if copied < n {
            return Err(ParseError::Eof(self.pos));
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let len = self.u64()?;
        if len > MAX_STRING_BYTES {
            return Err(ParseError::Bad(format!(
                "a header string claims {len} bytes"
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

// GGUF metadata value types.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

fn scalar_bytes(value_type: u32) -> Option<u64> {
    match value_type {
        T_U8 | T_I8 | T_BOOL => Some(1),
        T_U16 | T_I16 => Some(2),
        T_U32 | T_I32 | T_F32 => Some(4),
        T_U64 | T_I64 | T_F64 => Some(8),
        _ => None,
    }
}

/// Skips one value of `value_type`; returns it when it is a string or a u32.
fn read_value<R: Read>(
    r: &mut Reader<R>,
    value_type: u32,
    depth: u32,
) -> Result<Option<Value>, ParseError> {
    match value_type {
        T_STRING => Ok(Some(Value::Str(r.string()?))),
        T_U32 => Ok(Some(Value::U32(r.u32()?))),
        T_ARRAY => {
            if depth > 4 {
                return Err(ParseError::Bad("header arrays nest too deeply".into()));
            }
            let elem_type = r.u32()?;
            let len = r.u64()?;
            if let Some(size) = scalar_bytes(elem_type) {
                let total = len
                    .checked_mul(size)
                    .ok_or_else(|| ParseError::Bad("a header array is too long".into()))?;
                r.skip(total)?;
            } else {
                for _ in 0..len {
                    read_value(r, elem_type, depth + 1)?;
                }
            }
            Ok(None)
        }
        other => match scalar_bytes(other) {
            Some(size) => r.skip(size).map(|()| None),
            None => Err(ParseError::Bad(format!(
                "unknown metadata value type {other}"
            ))),
        },
    }
}

enum Value {
    Str(String),
    U32(u32),
}

fn parse_header<R: Read>(r: &mut Reader<R>) -> Result<Header, ParseError> {
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(ParseError::Bad(format!(
            "unsupported GGUF version {version} (llama.cpp reads versions 2 and 3)"
        )));
    }
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    let mut architecture = None;
    let mut alignment = DEFAULT_ALIGNMENT;
    for _ in 0..n_kv {
        let key = r.string()?;
        let value_type = r.u32()?;
        match (key.as_str(), read_value(r, value_type, 0)?) {
            ("general.architecture", Some(Value::Str(arch))) => architecture = Some(arch),
            ("general.alignment", Some(Value::U32(a))) if a > 0 => alignment = u64::from(a),
            _ => {}
        }
    }
    let mut data_bytes = Some(0u64);
    for _ in 0..n_tensors {
        let _name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return Err(ParseError::Bad(format!(
                "a tensor claims {n_dims} dimensions"
            )));
        }
        let mut n_elements: u64 = 1;
        let mut row: u64 = 0;
        for d in 0..n_dims {
            let dim = r.u64()?;
            if d == 0 {
                row = dim;
            }
            n_elements = n_elements.saturating_mul(dim);
        }
        let tensor_type = r.u32()?;
        let offset = r.u64()?;
        let size = tensor_bytes(tensor_type, row, n_elements);
        data_bytes = match (data_bytes, size) {
            (Some(end), Some(size)) => Some(end.max(offset.saturating_add(size))),
            _ => None,
        };
    }
    Ok(Header {
        version,
        architecture,
        n_tensors,
        alignment,
        end_pos: r.pos,
        data_bytes,
    })
}

/// Bytes of a tensor of `n_elements` of ggml type `tensor_type`, for the types models in
/// practice use; `None` for the rest (then only llama.cpp's own check applies).
fn tensor_bytes(tensor_type: u32, row: u64, n_elements: u64) -> Option<u64> {
    // (elements per block, bytes per block), from ggml's type traits.
    let (block, block_bytes): (u64, u64) = match tensor_type {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        30 => (1, 2),     // BF16
        _ => return None,
    };
    if !row.is_multiple_of(block) {
        return None;
    }
    Some(n_elements / block * block_bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A GGUF with the given architecture, no tensors: valid header, unloadable model.
    pub(crate) fn header_only(architecture: &str) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        let key = b"general.architecture";
        out.extend_from_slice(&(key.len() as u64).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&T_STRING.to_le_bytes());
        out.extend_from_slice(&(architecture.len() as u64).to_le_bytes());
        out.extend_from_slice(architecture.as_bytes());
        out
    }

    #[test]
    fn reads_architecture_of_a_crafted_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gguf");
        std::fs::write(&path, header_only("bogusarch")).unwrap();
        let info = inspect(&path).unwrap();
        assert_eq!(info.architecture.as_deref(), Some("bogusarch"));
        assert_eq!(info.n_tensors, 0);
    }

    #[test]
    fn rejects_non_gguf_and_truncated_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gguf");
        std::fs::write(&path, b"not a model").unwrap();
        assert!(matches!(inspect(&path), Err(Error::NotGguf { .. })));
        let header = header_only("llama");
        std::fs::write(&path, &header[..header.len() - 3]).unwrap();
        assert!(matches!(inspect(&path), Err(Error::CorruptGguf { .. })));
        assert!(matches!(
            inspect(&dir.path().join("missing.gguf")),
            Err(Error::ModelNotFound { .. })
        ));
    }
}
