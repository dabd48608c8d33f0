//! Pure compile: ModelDeployments, TeamModels, Secrets and the routing config -> one routing
//! snapshot per team view, plus one diagnostic per object.
//!
//! No IO, no clock, no randomness. Objects enter a [`ResourceStore`], which checks each against
//! its CRD's own schema rules once, when it changes; [`compile`] then does the cross-object
//! checks (references, secrets, conflicts, fallbacks) and builds the views. Global entries are
//! compiled once and shared by every team view.

#![forbid(unsafe_code)]

mod compile;
mod deployment;
mod diagnostic;
mod key;
mod policy;
mod selector;
mod store;
mod team_model;
mod tenancy;
mod version;
mod view;

pub use compile::compile;
pub use diagnostic::{Diagnostic, Kind, Reason};
pub use key::ObjectKey;
pub use policy::{builtin_defaults, resolve_policy};
pub use store::{ResourceStore, Tenancy};
pub use tenancy::TEAM_LABEL;
pub use view::Compiled;
