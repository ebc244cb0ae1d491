//! An OpenAI request body read field by field, so a bad value is answered
//! with the field's name (OpenAI's `param`), and nothing the client sent is
//! dropped silently unless it is known to change nothing.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::ApiError;

pub(super) struct Fields(Map<String, Value>);

/// A field this server does not implement, accepted only with a value that
/// leaves it off.
pub(super) struct Off {
    pub name: &'static str,
    pub is_off: fn(&Value) -> bool,
}

impl Fields {
    pub fn new(body: Value) -> Result<Self, ApiError> {
        match body {
            Value::Object(map) => Ok(Self(map)),
            _ => Err(ApiError::InvalidInput(
                "the request body must be a JSON object".into(),
            )),
        }
    }

    /// Takes `name` as a `T`; null counts as absent, as in OpenAI's API.
    /// `expected` says what `T` is, for the error message.
    pub fn take<T: DeserializeOwned>(
        &mut self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.take_raw(name) {
            None => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|_| invalid(name, format!("`{name}` must be {expected}"))),
        }
    }

    /// Takes `name` as it came, for fields of more than one type.
    pub fn take_raw(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name).filter(|value| !value.is_null())
    }

    /// Refuses what is left, except `ignored` fields (they change nothing
    /// here) and `off` fields set to their default.
    pub fn finish(self, ignored: &[&str], off: &[Off]) -> Result<(), ApiError> {
        for (name, value) in self.0 {
            if value.is_null() || ignored.contains(&name.as_str()) {
                continue;
            }
            match off.iter().find(|o| o.name == name) {
                Some(o) if (o.is_off)(&value) => {}
                Some(_) => {
                    return Err(unsupported(
                        &name,
                        format!(
                            "`{name}` is not supported by this server; leave it out or send its default"
                        ),
                    ));
                }
                None => {
                    return Err(unsupported(
                        &name,
                        format!("Unrecognized request argument supplied: {name}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

pub(super) fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        param: param.to_owned(),
        message: message.into(),
    }
}

pub(super) fn unsupported(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::UnsupportedField {
        param: param.to_owned(),
        message: message.into(),
    }
}

pub(super) fn is_zero(value: &Value) -> bool {
    value.as_f64() == Some(0.0)
}

/// An empty list or map (`tools: []`, `logit_bias: {}`).
pub(super) fn is_empty(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

pub(super) fn is_empty_string(value: &Value) -> bool {
    value.as_str() == Some("")
}

/// For fields whose every value asks for something this server lacks.
pub(super) fn never(_: &Value) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(body: Value) -> Fields {
        Fields::new(body).unwrap()
    }

    fn param(err: ApiError) -> String {
        match err {
            ApiError::InvalidField { param, .. } | ApiError::UnsupportedField { param, .. } => {
                param
            }
            other => panic!("no param: {other:?}"),
        }
    }

    #[test]
    fn a_bad_value_names_its_field() {
        let mut f = fields(json!({"temperature": "hot", "seed": null}));
        assert_eq!(f.take::<u64>("seed", "an integer").unwrap(), None);
        let err = f.take::<f32>("temperature", "a number").unwrap_err();
        assert_eq!(err.to_string(), "`temperature` must be a number");
        assert_eq!(param(err), "temperature");
    }

    #[test]
    fn leftovers_are_refused_unless_harmless() {
        let off = [Off {
            name: "presence_penalty",
            is_off: is_zero,
        }];
        let ok = json!({"user": "u1", "presence_penalty": 0, "tools": null});
        fields(ok).finish(&["user"], &off).unwrap();
        let on = fields(json!({"presence_penalty": 0.5}));
        assert_eq!(param(on.finish(&[], &off).unwrap_err()), "presence_penalty");
        let unknown = fields(json!({"max_token": 3}))
            .finish(&[], &off)
            .unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("Unrecognized request argument supplied: max_token")
        );
    }

    #[test]
    fn only_objects_are_bodies() {
        assert!(matches!(
            Fields::new(json!([1])),
            Err(ApiError::InvalidInput(_))
        ));
    }
}
