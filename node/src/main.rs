//! `ringkv-node`: the production server. The tokio runtime, peer transport and client protocol
//! arrive with the node issue; until then this binary only validates the default configuration.

fn main() {
    let config = ringkv_core::ClusterConfig::default();
    match config.validate() {
        Ok(()) => {
            println!("ringkv-node: the network server is not built yet; use `cargo run -p sim`")
        }
        Err(e) => {
            eprintln!("ringkv-node: {e}");
            std::process::exit(2);
        }
    }
}
