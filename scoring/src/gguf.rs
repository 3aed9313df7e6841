//! A small GGUF header reader that checks a model file before llama.cpp sees it.
//!
//! llama.cpp answers every load failure with a null pointer, so the reasons a user can fix
//! (not a GGUF at all, a truncated download, an architecture this build does not know) are
//! found here first: the magic bytes, the key/value header, the tensor table, and whether the
//! file is long enough to hold every tensor the table declares.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
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
    checked_header(path).map(|(_, info)| info)
}

/// The header of `path`, checked (see [`inspect`]), with what it says.
fn checked_header(path: &Path) -> Result<(Header, GgufInfo)> {
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
    let info = GgufInfo {
        version: header.version,
        architecture: header.architecture.clone(),
        n_tensors: header.n_tensors,
        required_bytes,
        file_bytes,
    };
    Ok((header, info))
}

/// ggml's type ids of the two block formats [`widen_q5_0`] converts between.
const GGML_Q5_0: u32 = 6;
const GGML_Q8_0: u32 = 8;
const Q5_0_BLOCK_BYTES: usize = 22;
const Q8_0_BLOCK_BYTES: usize = 34;

/// Copies the GGUF file `src` to `dst` with every Q5_0 tensor stored as Q8_0, value for value,
/// and returns how many tensors it converted. A Q5_0 block is an f16 scale and 32 integers in
/// [−16, 15]; a Q8_0 block is an f16 scale and 32 integers in [−128, 127], so the same scale
/// and the same integers are the same weights. The point is speed: llama.cpp's x86 kernels
/// read Q8_0 faster than Q5_0 (BENCHMARKS.md, "Q5_0 as Q8_0"), and the default model's
/// Q4_K_M file holds most of its weights as Q5_0 (its 896-wide rows do not fit the K-quants'
/// 256-wide blocks). The metadata and every other tensor are copied byte for byte.
pub fn widen_q5_0(src: &Path, dst: &Path) -> Result<usize> {
    let (header, info) = checked_header(src)?;
    let file_bytes = info.file_bytes;
    let corrupt = |detail: String| Error::CorruptGguf {
        path: src.to_path_buf(),
        detail,
    };
    // The header as it is, but for each tensor's type and offset; then the tensors, each at
    // the next aligned offset, in the table's order.
    let mut input =
        File::open(src).map_err(|e| Error::io(format!("cannot open {}", src.display()), e))?;
    let mut head = vec![0u8; header.end_pos as usize];
    input
        .read_exact(&mut head)
        .map_err(|e| Error::io(format!("cannot read {}", src.display()), e))?;
    let align = |n: u64| n.div_ceil(header.alignment) * header.alignment;
    let mut offset = 0u64;
    let mut n_widened = 0;
    let mut plan = Vec::with_capacity(header.tensors.len());
    for tensor in &header.tensors {
        let Some(bytes) = tensor.bytes else {
            return Err(corrupt(format!(
                "a tensor has type {}, whose size this reader does not know",
                tensor.tensor_type
            )));
        };
        let widen = tensor.tensor_type == GGML_Q5_0;
        let (new_type, new_bytes) = if widen {
            n_widened += 1;
            let blocks = bytes / Q5_0_BLOCK_BYTES as u64;
            (GGML_Q8_0, blocks * Q8_0_BLOCK_BYTES as u64)
        } else {
            (tensor.tensor_type, bytes)
        };
        offset = align(offset);
        let at = tensor.type_pos as usize;
        head[at..at + 4].copy_from_slice(&new_type.to_le_bytes());
        head[at + 4..at + 12].copy_from_slice(&offset.to_le_bytes());
        plan.push((tensor.offset, bytes, widen, offset));
        offset += new_bytes;
    }
    let data_start = align(header.end_pos);
    let source_start = data_start;
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        File::create(dst).map_err(|e| Error::io(format!("cannot create {}", dst.display()), e))?,
    );
    let write_err = |e| Error::io(format!("cannot write {}", dst.display()), e);
    out.write_all(&head).map_err(write_err)?;
    let mut written = header.end_pos;
    let pad_to = |out: &mut std::io::BufWriter<File>, written: &mut u64, to: u64| {
        let zeros = vec![0u8; (to - *written) as usize];
        *written = to;
        out.write_all(&zeros)
    };
    pad_to(&mut out, &mut written, data_start).map_err(write_err)?;
    let mut buf = Vec::new();
    for (source_offset, bytes, widen, new_offset) in plan {
        pad_to(&mut out, &mut written, data_start + new_offset).map_err(write_err)?;
        buf.resize(bytes as usize, 0);
        input
            .seek(SeekFrom::Start(source_start + source_offset))
            .and_then(|_| input.read_exact(&mut buf))
            .map_err(|_| {
                corrupt(format!(
                    "a tensor's data ends past the file's {file_bytes} bytes"
                ))
            })?;
        if widen {
            let mut wide = Vec::with_capacity(buf.len() / Q5_0_BLOCK_BYTES * Q8_0_BLOCK_BYTES);
            for block in buf.chunks_exact(Q5_0_BLOCK_BYTES) {
                wide.extend_from_slice(&q5_0_to_q8_0(block.try_into().expect("22-byte block")));
            }
            out.write_all(&wide).map_err(write_err)?;
            written += wide.len() as u64;
        } else {
            out.write_all(&buf).map_err(write_err)?;
            written += bytes;
        }
    }
    out.into_inner()
        .map_err(|e| write_err(e.into_error()))?
        .sync_all()
        .map_err(write_err)?;
    Ok(n_widened)
}

/// One Q5_0 block (f16 scale, 32 high bits, 16 bytes of low nibbles) as the Q8_0 block of the
/// same values: element `j < 16` is the low nibble of byte `j` with bit `j` of the high bits,
/// element `j + 16` its high nibble with bit `j + 16`, each minus 16 (ggml's
/// `dequantize_row_q5_0`).
fn q5_0_to_q8_0(block: &[u8; Q5_0_BLOCK_BYTES]) -> [u8; Q8_0_BLOCK_BYTES] {
    let mut out = [0u8; Q8_0_BLOCK_BYTES];
    out[..2].copy_from_slice(&block[..2]);
    let high_bits = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    for j in 0..16 {
        let byte = block[6 + j];
        let low = (byte & 0x0f) | (((high_bits >> j) & 1) as u8) << 4;
        let high = (byte >> 4) | (((high_bits >> (j + 16)) & 1) as u8) << 4;
        out[2 + j] = (low as i8 - 16) as u8;
        out[18 + j] = (high as i8 - 16) as u8;
    }
    out
}

struct Header {
    version: u32,
    architecture: Option<String>,
    n_tensors: u64,
    alignment: u64,
    tensors: Vec<TensorEntry>,
    end_pos: u64,
    /// Extent of the tensor data section, `None` when some tensor type has no size here.
    data_bytes: Option<u64>,
}

/// One row of the tensor table.
struct TensorEntry {
    /// Where its type is in the file; its offset follows.
    type_pos: u64,
    tensor_type: u32,
    /// From the start of the data section.
    offset: u64,
    /// `None` for a type [`tensor_bytes`] does not know.
    bytes: Option<u64>,
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
    let mut tensors = Vec::new();
    let mut data_bytes = Some(0u64);
    for _ in 0..n_tensors {
        r.string()?;
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return Err(ParseError::Bad(format!(
                "a tensor claims {n_dims} dimensions"
            )));
        }
        let dims = (0..n_dims)
            .map(|_| r.u64())
            .collect::<Result<Vec<u64>, ParseError>>()?;
        let n_elements = dims.iter().fold(1u64, |n, &d| n.saturating_mul(d));
        let type_pos = r.pos;
        let tensor_type = r.u32()?;
        let offset = r.u64()?;
        let bytes = tensor_bytes(tensor_type, dims.first().copied().unwrap_or(0), n_elements);
        data_bytes = match (data_bytes, bytes) {
            (Some(end), Some(size)) => Some(end.max(offset.saturating_add(size))),
            _ => None,
        };
        tensors.push(TensorEntry {
            type_pos,
            tensor_type,
            offset,
            bytes,
        });
    }
    Ok(Header {
        version,
        architecture,
        n_tensors,
        alignment,
        tensors,
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

    /// ggml's `dequantize_row_q5_0` for one block, as integers (the scale aside).
    fn q5_0_integers(block: &[u8; Q5_0_BLOCK_BYTES]) -> [i32; 32] {
        let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let mut y = [0i32; 32];
        for j in 0..16 {
            let xh_0 = ((qh >> j) << 4) & 0x10;
            let xh_1 = (qh >> (j + 12)) & 0x10;
            y[j] = ((u32::from(block[6 + j]) & 0x0f) | xh_0) as i32 - 16;
            y[j + 16] = ((u32::from(block[6 + j]) >> 4) | xh_1) as i32 - 16;
        }
        y
    }

    fn pseudo_random_bytes(n: usize, mut state: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn a_q5_0_block_becomes_the_q8_0_block_of_the_same_values() {
        let bytes = pseudo_random_bytes(Q5_0_BLOCK_BYTES * 500, 0x9e37_79b9_7f4a_7c15);
        for block in bytes.chunks_exact(Q5_0_BLOCK_BYTES) {
            let block: &[u8; Q5_0_BLOCK_BYTES] = block.try_into().unwrap();
            let wide = q5_0_to_q8_0(block);
            assert_eq!(wide[..2], block[..2], "the scale is kept");
            let values: Vec<i32> = wide[2..].iter().map(|&q| i32::from(q as i8)).collect();
            assert_eq!(values, q5_0_integers(block));
        }
    }

    /// A GGUF with two tensors, a Q5_0 one of 64 weights and an F32 one of 3, each at an
    /// aligned offset.
    fn two_tensor_file(q5: &[u8], f32s: &[u8]) -> Vec<u8> {
        let mut out = header_only("llama");
        out[8..16].copy_from_slice(&2u64.to_le_bytes());
        let entry = |out: &mut Vec<u8>, name: &str, dims: &[u64], ty: u32, offset: u64| {
            out.extend_from_slice(&(name.len() as u64).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        };
        entry(&mut out, "blk.0.ffn_up.weight", &[32, 2], GGML_Q5_0, 0);
        entry(&mut out, "output_norm.weight", &[3], 0, 64);
        out.resize(out.len().div_ceil(32) * 32, 0);
        out.extend_from_slice(q5);
        out.resize(out.len().div_ceil(32) * 32, 0);
        out.extend_from_slice(f32s);
        out
    }

    #[test]
    fn widening_rewrites_q5_0_tensors_and_copies_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let q5 = pseudo_random_bytes(2 * Q5_0_BLOCK_BYTES, 42);
        let f32s: Vec<u8> = [1.5f32, -2.0, 0.25]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let src = dir.path().join("in.gguf");
        let dst = dir.path().join("out.gguf");
        std::fs::write(&src, two_tensor_file(&q5, &f32s)).unwrap();
        assert_eq!(widen_q5_0(&src, &dst).unwrap(), 1);

        let (header, info) = checked_header(&dst).unwrap();
        assert_eq!(
            (info.n_tensors, info.architecture.as_deref()),
            (2, Some("llama"))
        );
        assert_eq!(
            info.required_bytes, info.file_bytes,
            "nothing after the last tensor"
        );
        let types: Vec<u32> = header.tensors.iter().map(|t| t.tensor_type).collect();
        assert_eq!(types, [GGML_Q8_0, 0]);
        let bytes = std::fs::read(&dst).unwrap();
        let data = (header.end_pos as usize).div_ceil(32) * 32;
        let at = |t: usize| data + header.tensors[t].offset as usize;
        assert_eq!(header.tensors[1].offset % 32, 0);
        for (b, block) in q5.chunks_exact(Q5_0_BLOCK_BYTES).enumerate() {
            let wide = &bytes[at(0) + b * Q8_0_BLOCK_BYTES..][..Q8_0_BLOCK_BYTES];
            assert_eq!(wide, q5_0_to_q8_0(block.try_into().unwrap()));
        }
        assert_eq!(&bytes[at(1)..at(1) + 12], &f32s[..]);
        // A file without Q5_0 comes out byte for byte.
        let again = dir.path().join("again.gguf");
        assert_eq!(widen_q5_0(&dst, &again).unwrap(), 0);
        assert_eq!(std::fs::read(&again).unwrap(), bytes);
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
