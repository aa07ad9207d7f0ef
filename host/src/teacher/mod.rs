//! The frozen English teacher ([`Teacher`], all-MiniLM-L6-v2 on candle) and the on-disk cache of
//! its outputs ([`cache::TeacherCache`]).
pub mod cache;
mod model;

pub use model::{
    BertConfig, MAX_TOKENS, Pooling, Teacher, TeacherError, TeacherOutputs, TeacherTokens, TokenStates,
};
