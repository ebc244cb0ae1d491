//! The request pipeline under every protocol and the async worker: one
//! [`Call`] carries a request's context (id, cancellation, deadline, log
//! sink) on the deployment it was routed to, takes a model slot through
//! admission, runs preprocess/predict/postprocess or a capability, and
//! [`serve`] turns its outcome into a response with the deployment named.
//!
//! Protocols (`routes/`) only decode a request into a call and encode its
//! [`Reply`]; nothing here knows a protocol's paths or body shapes.

mod call;
mod predict;
mod respond;

pub(crate) use call::{Admit, Call, Slot};
pub(crate) use respond::{Custom, CustomBody, Encoding, Reply, serve};
