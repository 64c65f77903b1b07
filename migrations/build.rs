//! `embed_migrations!` reads `sql/` at compile time; without this, a new migration folder does
//! not make cargo rebuild the crate, and the binaries keep the old list.

fn main() {
    println!("cargo:rerun-if-changed=sql");
}
