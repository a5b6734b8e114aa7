//! Starting nodes: as local processes (SSH deployment comes with a later issue).

pub mod local;
