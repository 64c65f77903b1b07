//! What `vault-bench` (src/bin/vault-bench.rs) measures with, beside the binary that runs it:
//! per-order latency from the warehouse ([`latency`]), the processes' CPU and memory
//! ([`processes`]), the database-alone reference of a drain ([`reference`]), the plots
//! ([`plot`]) and the progress bar ([`progress`]).

pub mod latency;
pub mod plot;
pub mod processes;
pub mod progress;
pub mod reference;
