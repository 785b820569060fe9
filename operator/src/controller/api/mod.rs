//! The TrafficSplit API.

pub mod rollout;
