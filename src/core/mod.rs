//! The billing core: pure functions over domain types. It does no IO and never reads the
//! clock — every date it uses is passed in.

pub mod billing;
pub mod catalog;
pub mod change;
pub mod correction;
pub mod document;
pub mod domain;
pub mod licence;
pub mod limits;
pub mod messages;
pub mod money;
pub mod party;
pub mod period;
pub mod policy;
pub mod sanity;
