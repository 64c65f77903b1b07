//! Prints docs/configuration.md, the configuration reference, from the declaration of every
//! variable (vault-runtime/src/config/variables.rs):
//!
//!     cargo run -q -p vault-runtime --example config-reference > docs/configuration.md
//!
//! CI (.ci/run) fails when the committed file differs from what this prints.

fn main() {
    print!("{}", vault_runtime::variables::reference());
}
