use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{AsyncModel, InitContext, Model, ModelError, ModelInstance};

type Factory = Arc<dyn Fn(InitContext) -> Result<ModelInstance, ModelError> + Send + Sync>;

/// The compiled-in model classes, keyed by `model_class_name`. A team embeds
/// its own model by registering it here in its own binary. A fallback (a
/// backend that runs a model directory's own code, such as a Truss
/// `model.py`) serves a class that is not compiled in when the directory has
/// what it needs; compiled-in classes keep priority.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
    fallback: Option<Fallback>,
}

#[derive(Clone)]
struct Fallback {
    /// What the fallback serves, for errors: "a Python `model/model.py`".
    describe: Arc<dyn Fn(&InitContext) -> String + Send + Sync>,
    applies: Arc<dyn Fn(&InitContext) -> bool + Send + Sync>,
    create: Factory,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("model_class_name `{name}` is not compiled into this binary; available: {available}")]
    Unknown { name: String, available: String },
    #[error(
        "model_class_name `{name}` is not compiled into this binary; available: {available}; \
         nor does the directory have {fallback}"
    )]
    Neither {
        name: String,
        available: String,
        fallback: String,
    },
    #[error("constructing model `{name}` failed: {source}")]
    Init {
        name: String,
        #[source]
        source: ModelError,
    },
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a blocking model class.
    pub fn register<M, F>(&mut self, name: &str, create: F) -> &mut Self
    where
        M: Model,
        F: Fn(InitContext) -> Result<M, ModelError> + Send + Sync + 'static,
    {
        self.insert(name, move |ctx| create(ctx).map(ModelInstance::blocking))
    }

    /// Registers an async model class.
    pub fn register_async<M, F>(&mut self, name: &str, create: F) -> &mut Self
    where
        M: AsyncModel,
        F: Fn(InitContext) -> Result<M, ModelError> + Send + Sync + 'static,
    {
        self.insert(name, move |ctx| {
            create(ctx).map(ModelInstance::asynchronous)
        })
    }

    /// Registers a factory that decides the kind itself.
    pub fn insert<F>(&mut self, name: &str, create: F) -> &mut Self
    where
        F: Fn(InitContext) -> Result<ModelInstance, ModelError> + Send + Sync + 'static,
    {
        self.factories.insert(name.to_owned(), Arc::new(create));
        self
    }

    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// Sets the fallback for classes that are not compiled in: `applies`
    /// says whether a model's directory can be served by it, `describe`
    /// what it would need (for the error when it cannot).
    pub fn set_fallback<D, A, F>(&mut self, describe: D, applies: A, create: F) -> &mut Self
    where
        D: Fn(&InitContext) -> String + Send + Sync + 'static,
        A: Fn(&InitContext) -> bool + Send + Sync + 'static,
        F: Fn(InitContext) -> Result<ModelInstance, ModelError> + Send + Sync + 'static,
    {
        self.fallback = Some(Fallback {
            describe: Arc::new(describe),
            applies: Arc::new(applies),
            create: Arc::new(create),
        });
        self
    }

    /// Whether `name` can be constructed for `ctx`: compiled in, or served
    /// by the fallback. The error says why not, naming both options.
    pub fn check(&self, name: &str, ctx: &InitContext) -> Result<(), RegistryError> {
        if self.factories.contains_key(name)
            || self.fallback.as_ref().is_some_and(|f| (f.applies)(ctx))
        {
            return Ok(());
        }
        let available = self.names().collect::<Vec<_>>().join(", ");
        Err(match &self.fallback {
            Some(fallback) => RegistryError::Neither {
                name: name.to_owned(),
                available,
                fallback: (fallback.describe)(ctx),
            },
            None => RegistryError::Unknown {
                name: name.to_owned(),
                available,
            },
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Constructs (does not load) the model registered as `name`.
    pub fn create(&self, name: &str, ctx: InitContext) -> Result<ModelInstance, RegistryError> {
        self.check(name, &ctx)?;
        let factory = match self.factories.get(name) {
            Some(factory) => factory,
            None => &self.fallback.as_ref().expect("checked above").create,
        };
        factory(ctx).map_err(|source| RegistryError::Init {
            name: name.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Output, RequestContext};
    use serde_json::{Value, json};

    struct Constant(Value);
    impl Model for Constant {
        fn predict(&self, _: Value, _: &RequestContext) -> Result<Output, ModelError> {
            Ok(Output::Json(self.0.clone()))
        }
    }

    #[test]
    fn unknown_name_lists_what_is_available() {
        let mut registry = Registry::new();
        registry.register("Constant", |_| Ok(Constant(json!(1))));
        let err = registry
            .create("Model", InitContext::new(json!({}), "data"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "model_class_name `Model` is not compiled into this binary; available: Constant"
        );
    }

    #[test]
    fn factory_receives_the_init_context() {
        let mut registry = Registry::new();
        registry.register("Constant", |ctx| Ok(Constant(ctx.config["answer"].clone())));
        let instance = registry.create("Constant", InitContext::new(json!({"answer": 42}), "data"));
        let ModelInstance::Blocking(model) = instance.unwrap() else {
            panic!("expected blocking")
        };
        let out = model
            .predict(json!(null), &RequestContext::detached("r1"))
            .unwrap();
        assert!(matches!(out, Output::Json(v) if v == json!(42)));
    }
}
