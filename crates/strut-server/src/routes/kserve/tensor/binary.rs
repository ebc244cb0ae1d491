//! The binary tensor data extension of the V2 protocol, as Triton defines
//! it and tritonclient uses it by default: tensor data as raw little-endian
//! elements after the JSON document (whose length is the
//! `Inference-Header-Content-Length` header), one tensor after another, a
//! tensor's size in its `parameters.binary_data_size`. BYTES elements are
//! each a 4-byte little-endian length and the bytes. Models still see JSON
//! values: this module converts at the edge.

use half::{bf16, f16};
use serde_json::Value;

use super::Datatype;

/// Bytes per element; `None` for BYTES (length-prefixed).
fn width(datatype: Datatype) -> Option<usize> {
    use Datatype::*;
    Some(match datatype {
        Bool | Uint8 | Int8 => 1,
        Uint16 | Int16 | Fp16 | Bf16 => 2,
        Uint32 | Int32 | Fp32 => 4,
        Uint64 | Int64 | Fp64 => 8,
        Bytes => return None,
    })
}

/// `count` elements of `datatype` from `raw`, which must hold exactly them.
pub(crate) fn decode(datatype: Datatype, count: u64, raw: &[u8]) -> Result<Vec<Value>, String> {
    let Some(width) = width(datatype) else {
        return decode_bytes(count, raw);
    };
    let expected = count.checked_mul(width as u64);
    if expected != Some(raw.len() as u64) {
        return Err(format!(
            "binary data of {} bytes, but {count} {} elements take {}",
            raw.len(),
            datatype.name(),
            expected.map_or_else(|| "more than 2^64".into(), |n| n.to_string())
        ));
    }
    let element = |b: &[u8]| -> Value {
        let le = |n: usize| -> [u8; 8] {
            let mut out = [0u8; 8];
            out[..n].copy_from_slice(&b[..n]);
            out
        };
        use Datatype::*;
        match datatype {
            Bool => Value::Bool(b[0] != 0),
            Uint8 => b[0].into(),
            Int8 => (b[0] as i8).into(),
            Uint16 => u16::from_le_bytes([b[0], b[1]]).into(),
            Int16 => i16::from_le_bytes([b[0], b[1]]).into(),
            Uint32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]).into(),
            Int32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]).into(),
            Uint64 => u64::from_le_bytes(le(8)).into(),
            Int64 => i64::from_le_bytes(le(8)).into(),
            Fp16 => f64::from(f16::from_le_bytes([b[0], b[1]])).into(),
            Bf16 => f64::from(bf16::from_le_bytes([b[0], b[1]])).into(),
            Fp32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).into(),
            Fp64 => f64::from_le_bytes(le(8)).into(),
            Bytes => unreachable!("BYTES has no fixed width"),
        }
    };
    Ok(raw.chunks_exact(width).map(element).collect())
}

fn decode_bytes(count: u64, mut raw: &[u8]) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let (len, rest) = raw
            .split_first_chunk::<4>()
            .ok_or("a BYTES element's 4-byte length is cut off")?;
        let len = u32::from_le_bytes(*len) as usize;
        let (bytes, rest) = rest
            .split_at_checked(len)
            .ok_or("a BYTES element is shorter than its length says")?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "a BYTES element is not UTF-8; strut passes texts to models as JSON")?;
        out.push(Value::String(text.to_owned()));
        raw = rest;
    }
    if out.len() as u64 != count {
        return Err(format!(
            "binary data holds {} BYTES elements, the shape needs {count}",
            out.len()
        ));
    }
    Ok(out)
}

/// Appends `data` (validated elements of `datatype`) as the extension lays
/// them out.
pub(crate) fn encode(datatype: Datatype, data: &[Value], out: &mut Vec<u8>) -> Result<(), String> {
    for (i, v) in data.iter().enumerate() {
        let bad = || format!("element {i} ({v}) is not {}", datatype.name());
        let int = || v.as_i64().ok_or_else(bad);
        let uint = || v.as_u64().ok_or_else(bad);
        let float = || v.as_f64().ok_or_else(bad);
        use Datatype::*;
        match datatype {
            Bool => out.push(u8::from(v.as_bool().ok_or_else(bad)?)),
            Uint8 => out.push(uint()? as u8),
            Int8 => out.push(int()? as i8 as u8),
            Uint16 => out.extend((uint()? as u16).to_le_bytes()),
            Int16 => out.extend((int()? as i16).to_le_bytes()),
            Uint32 => out.extend((uint()? as u32).to_le_bytes()),
            Int32 => out.extend((int()? as i32).to_le_bytes()),
            Uint64 => out.extend(uint()?.to_le_bytes()),
            Int64 => out.extend(int()?.to_le_bytes()),
            Fp16 => out.extend(f16::from_f64(float()?).to_le_bytes()),
            Bf16 => out.extend(bf16::from_f64(float()?).to_le_bytes()),
            Fp32 => out.extend((float()? as f32).to_le_bytes()),
            Fp64 => out.extend(float()?.to_le_bytes()),
            Bytes => {
                let s = v.as_str().ok_or_else(bad)?;
                let len = u32::try_from(s.len()).map_err(|_| bad())?;
                out.extend(len.to_le_bytes());
                out.extend(s.as_bytes());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_datatype_round_trips() {
        let cases = [
            (Datatype::Bool, json!([true, false])),
            (Datatype::Uint8, json!([0, 255])),
            (Datatype::Int8, json!([-128, 127])),
            (Datatype::Uint16, json!([65535, 1])),
            (Datatype::Int16, json!([-2, 3])),
            (Datatype::Uint32, json!([4_000_000_000u64, 5])),
            (Datatype::Int32, json!([-7, 8])),
            (Datatype::Uint64, json!([u64::MAX, 0])),
            (Datatype::Int64, json!([i64::MIN, 9])),
            (Datatype::Fp16, json!([0.5, -2.0])),
            (Datatype::Bf16, json!([1.5, -4.0])),
            (Datatype::Fp32, json!([0.25, 1e10])),
            (Datatype::Fp64, json!([1e300, -0.125])),
            (Datatype::Bytes, json!(["héllo", ""])),
        ];
        for (datatype, data) in cases {
            let data = data.as_array().unwrap();
            let mut raw = Vec::new();
            encode(datatype, data, &mut raw).unwrap();
            assert_eq!(&decode(datatype, 2, &raw).unwrap(), data, "{datatype:?}");
        }
    }

    #[test]
    fn sizes_that_do_not_match_the_shape_are_refused() {
        let err = decode(Datatype::Fp32, 3, &[0u8; 8]).unwrap_err();
        assert!(err.contains("3 FP32 elements take 12"), "{err}");
        let err = decode(Datatype::Bytes, 1, &[5, 0, 0, 0, b'a']).unwrap_err();
        assert!(err.contains("shorter than its length"), "{err}");
        let err = decode(Datatype::Bytes, 2, &[1, 0, 0, 0, b'a']).unwrap_err();
        assert!(err.contains("holds 1 BYTES elements"), "{err}");
    }
}
