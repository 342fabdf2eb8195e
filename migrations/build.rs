//! Rebuild the embedded migrations when a file is added to `sql/` (cargo only tracks files that
//! `sqlx::migrate!` already read).
fn main() {
    println!("cargo:rerun-if-changed=sql");
}
