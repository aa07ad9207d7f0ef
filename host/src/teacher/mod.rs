//! The frozen English teacher ([`Teacher`], all-MiniLM-L6-v2 on candle) and the on-disk cache of
//! its outputs ([`cache::TeacherCache`]), and the narrower space a `nano` student is distilled into
//! ([`projection::Projection`]).
pub mod cache;
mod model;
pub mod projection;

pub use model::{
    BertConfig, MAX_TOKENS, Pooling, Teacher, TeacherError, TeacherOutputs, TeacherTokens, TokenStates,
};
