//! Open Inference Protocol tensors: parsed strictly, validated against their
//! shape and datatype, and flattened, so a model only ever sees well-formed
//! row-major data and a client only ever gets it back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The datatypes of the protocol's "Tensor Data Types" table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Datatype {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bf16,
    Bytes,
}

const DATATYPES: [(Datatype, &str); 14] = [
    (Datatype::Bool, "BOOL"),
    (Datatype::Uint8, "UINT8"),
    (Datatype::Uint16, "UINT16"),
    (Datatype::Uint32, "UINT32"),
    (Datatype::Uint64, "UINT64"),
    (Datatype::Int8, "INT8"),
    (Datatype::Int16, "INT16"),
    (Datatype::Int32, "INT32"),
    (Datatype::Int64, "INT64"),
    (Datatype::Fp16, "FP16"),
    (Datatype::Fp32, "FP32"),
    (Datatype::Fp64, "FP64"),
    (Datatype::Bf16, "BF16"),
    (Datatype::Bytes, "BYTES"),
];

/// What one element of a datatype must be in JSON.
enum Element {
    Bool,
    /// An integer within these bounds.
    Int(i128, i128),
    /// A number whose magnitude is at most this (larger would become infinity).
    Float(f64),
    Str,
}

impl Datatype {
    pub(crate) fn name(self) -> &'static str {
        DATATYPES
            .iter()
            .find(|(d, _)| *d == self)
            .map(|(_, name)| *name)
            .expect("every datatype is in the table")
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        DATATYPES.iter().find(|(_, n)| *n == name).map(|(d, _)| *d)
    }

    fn element(self) -> Element {
        use Datatype::*;
        match self {
            Bool => Element::Bool,
            Uint8 => Element::Int(0, u8::MAX.into()),
            Uint16 => Element::Int(0, u16::MAX.into()),
            Uint32 => Element::Int(0, u32::MAX.into()),
            Uint64 => Element::Int(0, u64::MAX.into()),
            Int8 => Element::Int(i8::MIN.into(), i8::MAX.into()),
            Int16 => Element::Int(i16::MIN.into(), i16::MAX.into()),
            Int32 => Element::Int(i32::MIN.into(), i32::MAX.into()),
            Int64 => Element::Int(i64::MIN.into(), i64::MAX.into()),
            Fp16 => Element::Float(65504.0),
            Fp32 | Bf16 => Element::Float(f32::MAX.into()),
            Fp64 => Element::Float(f64::MAX),
            Bytes => Element::Str,
        }
    }
}

impl Serialize for Datatype {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A tensor as it arrives, in a request's `inputs` or a model's `outputs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTensor {
    pub name: String,
    /// Signed, so a negative dimension gets our message rather than serde's.
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Absent when the tensor came as binary data (see `binary`).
    #[serde(default)]
    pub data: Option<Value>,
}

/// A validated tensor: a known datatype, and `data` flat, row-major, holding
/// exactly the product of `shape` elements of that datatype.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Tensor {
    pub name: String,
    pub datatype: Datatype,
    pub shape: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    pub data: Vec<Value>,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum TensorError {
    #[error(
        "tensor `{tensor}` has datatype `{datatype}`; use one of BOOL, UINT8, UINT16, UINT32, \
         UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BF16, BYTES"
    )]
    UnknownDatatype { tensor: String, datatype: String },
    #[error("{0}")]
    Invalid(String),
}

impl RawTensor {
    pub(crate) fn validate(self) -> Result<Tensor, TensorError> {
        let name = self.name;
        let invalid = |message: String| TensorError::Invalid(format!("tensor `{name}`: {message}"));
        if name.is_empty() {
            return Err(TensorError::Invalid("a tensor has an empty name".into()));
        }
        let datatype =
            Datatype::parse(&self.datatype).ok_or_else(|| TensorError::UnknownDatatype {
                tensor: name.clone(),
                datatype: self.datatype.clone(),
            })?;
        let shape = self
            .shape
            .iter()
            .map(|&d| u64::try_from(d))
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|_| invalid(format!("shape {:?} has a negative dimension", self.shape)))?;
        let data = self.data.ok_or_else(|| {
            invalid("`data` is missing (binary data needs `parameters.binary_data_size`)".into())
        })?;
        let (dims, data) = flatten(data).map_err(invalid)?;
        let count = data.len() as u64;
        let expected = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        if expected != Some(count) {
            return Err(invalid(format!(
                "shape {shape:?} needs {} elements but data has {count}",
                expected.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string())
            )));
        }
        // Nested data states its own shape; flat data takes the declared one.
        if dims.len() > 1 && dims.iter().map(|&d| d as u64).ne(shape.iter().copied()) {
            return Err(invalid(format!(
                "nested data has shape {dims:?} but the declared shape is {shape:?}"
            )));
        }
        if let Some((i, problem)) = data
            .iter()
            .enumerate()
            .find_map(|(i, v)| misfit(datatype, v).map(|p| (i, p)))
        {
            return Err(invalid(format!("element {i} is {problem}")));
        }
        Ok(Tensor {
            name,
            datatype,
            shape,
            parameters: self.parameters,
            data,
        })
    }
}

/// The dimensions of `data` and its elements in row-major order; fails
/// unless `data` is an array whose nesting is rectangular.
fn flatten(data: Value) -> Result<(Vec<usize>, Vec<Value>), String> {
    if !data.is_array() {
        return Err(format!("`data` must be an array, got {}", kind(&data)));
    }
    let mut dims = Vec::new();
    let mut probe = &data;
    while let Value::Array(items) = probe {
        dims.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut out = Vec::with_capacity(dims.iter().product());
    if !collect(data, &dims, &mut out) {
        return Err(
            "nested `data` is ragged: every row must have the same length and depth".into(),
        );
    }
    Ok((dims, out))
}

fn collect(value: Value, dims: &[usize], out: &mut Vec<Value>) -> bool {
    match (value, dims.split_first()) {
        (Value::Array(items), Some((&len, rest))) if items.len() == len => {
            items.into_iter().all(|item| collect(item, rest, out))
        }
        (Value::Array(_), _) => false,
        (scalar, None) => {
            out.push(scalar);
            true
        }
        (_, Some(_)) => false,
    }
}

/// What is wrong with `value` as an element of `datatype`, if anything.
fn misfit(datatype: Datatype, value: &Value) -> Option<String> {
    let name = datatype.name();
    match (datatype.element(), value) {
        (Element::Bool, Value::Bool(_)) | (Element::Str, Value::String(_)) => None,
        (Element::Int(min, max), Value::Number(n)) => {
            match n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)) {
                Some(i) if (min..=max).contains(&i) => None,
                Some(i) => Some(format!("{i}, outside {name}'s range {min}..={max}")),
                None => Some(format!("{n}; {name} takes integers")),
            }
        }
        (Element::Float(max), Value::Number(n)) => match n.as_f64() {
            Some(x) if x.abs() <= max => None,
            _ => Some(format!("{n}, beyond {name}'s largest magnitude {max:e}")),
        },
        (element, other) => {
            let wanted = match element {
                Element::Bool => "booleans",
                Element::Int(..) => "integers",
                Element::Float(_) => "numbers",
                Element::Str => "strings",
            };
            Some(format!("{}; {name} takes {wanted}", kind(other)))
        }
    }
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) mod binary;
#[cfg(test)]
mod tests;
