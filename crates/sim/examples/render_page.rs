//! Prints one node's page after simulating a while: `cargo run -p gpuwarden-sim
//! --example render_page -- [node] [minutes]`.

use gpuwarden_sim::{Fleet, SimConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let node: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let minutes: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let cfg = SimConfig::default();
    let mut fleet = Fleet::new(&cfg).expect("valid default config");
    fleet.advance_to(fleet.now_ms() + minutes * 60_000);
    let mut out = String::new();
    fleet.render_node(node, &mut out);
    print!("{out}");
}
