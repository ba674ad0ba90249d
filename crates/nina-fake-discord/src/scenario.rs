//! Scripted scenarios (JSON) for running the fake standalone.
