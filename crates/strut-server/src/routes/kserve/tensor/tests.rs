//! Validation of tensors as clients and models send them.

use super::*;
use serde_json::json;

fn tensor(shape: Value, datatype: &str, data: Value) -> Result<Tensor, TensorError> {
    let raw: RawTensor = serde_json::from_value(
        json!({"name": "x", "shape": shape, "datatype": datatype, "data": data}),
    )
    .unwrap();
    raw.validate()
}

fn error(shape: Value, datatype: &str, data: Value) -> String {
    tensor(shape, datatype, data).unwrap_err().to_string()
}

#[test]
fn flat_and_nested_data_give_the_same_tensor() {
    let flat = tensor(json!([2, 2]), "FP32", json!([1, 2.5, 3, 4])).unwrap();
    let nested = tensor(json!([2, 2]), "FP32", json!([[1, 2.5], [3, 4]])).unwrap();
    assert_eq!(flat, nested);
    assert_eq!(flat.shape, vec![2, 2]);
    assert_eq!(flat.data, vec![json!(1), json!(2.5), json!(3), json!(4)]);
    let out = serde_json::to_value(&flat).unwrap();
    assert_eq!(
        out,
        json!({"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2.5, 3, 4]})
    );
}

#[test]
fn element_count_must_match_the_shape() {
    let err = error(json!([3]), "INT32", json!([1, 2, 3, 4]));
    assert_eq!(err, "tensor `x`: shape [3] needs 3 elements but data has 4");
    let err = error(json!([1u64 << 40, 1u64 << 40]), "INT32", json!([1]));
    assert!(err.contains("more than 2^64"), "{err}");
    // A scalar has the empty shape and one element; a zero dimension none.
    tensor(json!([]), "INT32", json!([7])).unwrap();
    tensor(json!([2, 0]), "INT32", json!([])).unwrap();
    tensor(json!([2, 0]), "INT32", json!([[], []])).unwrap();
}

#[test]
fn nested_data_must_be_rectangular_and_match_the_shape() {
    let ragged = error(json!([2, 2]), "INT8", json!([[1, 2], [3]]));
    assert!(ragged.contains("ragged"), "{ragged}");
    let mixed = error(json!([2]), "INT8", json!([1, [2]]));
    assert!(mixed.contains("ragged"), "{mixed}");
    let deeper = error(json!([2, 1]), "INT8", json!([[1], [[2]]]));
    assert!(deeper.contains("ragged"), "{deeper}");
    let transposed = error(json!([1, 4]), "INT8", json!([[1, 2], [3, 4]]));
    assert_eq!(
        transposed,
        "tensor `x`: nested data has shape [2, 2] but the declared shape is [1, 4]"
    );
    // Flat data may take any shape with the right number of elements.
    tensor(json!([4, 1]), "INT8", json!([1, 2, 3, 4])).unwrap();
}

#[test]
fn shape_and_data_must_be_well_formed() {
    assert_eq!(
        error(json!([-1, 2]), "FP32", json!([1, 2])),
        "tensor `x`: shape [-1, 2] has a negative dimension"
    );
    assert_eq!(
        error(json!([1]), "FP32", json!(1)),
        "tensor `x`: `data` must be an array, got a number"
    );
    let raw: Result<RawTensor, _> = serde_json::from_value(
        json!({"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "extra": 1}),
    );
    assert!(
        raw.unwrap_err()
            .to_string()
            .contains("unknown field `extra`")
    );
    let unnamed = tensor_named("", json!([1]));
    assert_eq!(
        unnamed.unwrap_err().to_string(),
        "a tensor has an empty name"
    );
}

fn tensor_named(name: &str, data: Value) -> Result<Tensor, TensorError> {
    let raw: RawTensor = serde_json::from_value(
        json!({"name": name, "shape": [1], "datatype": "INT8", "data": data}),
    )
    .unwrap();
    raw.validate()
}

#[test]
fn unknown_datatypes_are_named() {
    let err = tensor(json!([1]), "FLOAT32", json!([1])).unwrap_err();
    assert_eq!(
        err,
        TensorError::UnknownDatatype {
            tensor: "x".into(),
            datatype: "FLOAT32".into()
        }
    );
    // Names are case-sensitive, as in the protocol's table.
    assert!(matches!(
        tensor(json!([1]), "fp32", json!([1])),
        Err(TensorError::UnknownDatatype { .. })
    ));
    for (datatype, name) in DATATYPES {
        assert_eq!(Datatype::parse(name), Some(datatype));
        assert_eq!(datatype.name(), name);
    }
}

#[test]
fn elements_must_fit_the_datatype() {
    tensor(json!([2]), "BOOL", json!([true, false])).unwrap();
    tensor(json!([2]), "UINT64", json!([0, u64::MAX])).unwrap();
    tensor(json!([2]), "INT64", json!([i64::MIN, i64::MAX])).unwrap();
    tensor(json!([2]), "FP16", json!([-65504.0, 1])).unwrap();
    tensor(json!([1]), "BYTES", json!(["text"])).unwrap();

    let cases = [
        (
            "BOOL",
            json!([1]),
            "element 0 is a number; BOOL takes booleans",
        ),
        (
            "UINT8",
            json!([255, 256]),
            "element 1 is 256, outside UINT8's range 0..=255",
        ),
        (
            "UINT32",
            json!([-1]),
            "element 0 is -1, outside UINT32's range",
        ),
        (
            "INT8",
            json!([-129]),
            "element 0 is -129, outside INT8's range -128..=127",
        ),
        (
            "INT32",
            json!([1.5]),
            "element 0 is 1.5; INT32 takes integers",
        ),
        ("INT64", json!([u64::MAX]), "outside INT64's range"),
        (
            "FP16",
            json!([70000.0]),
            "element 0 is 70000.0, beyond FP16's largest magnitude 6.5504e4",
        ),
        ("FP32", json!([1e39]), "beyond FP32's largest magnitude"),
        (
            "FP32",
            json!(["1.0"]),
            "element 0 is a string; FP32 takes numbers",
        ),
        (
            "FP64",
            json!([null]),
            "element 0 is null; FP64 takes numbers",
        ),
        (
            "BYTES",
            json!([3]),
            "element 0 is a number; BYTES takes strings",
        ),
        (
            "BYTES",
            json!([{"a": 1}]),
            "element 0 is an object; BYTES takes strings",
        ),
    ];
    for (datatype, data, expected) in cases {
        let err = error(
            json!([data.as_array().unwrap().len()]),
            datatype,
            data.clone(),
        );
        assert!(err.contains(expected), "{datatype} {data}: `{err}`");
    }
}
