//! A proxy that reads every blob upload's body at a fixed rate, for `scripts/bench-pack.sh`:
//! `throttle-proxy UPSTREAM BYTES_PER_SEC` prints its address, then forwards until its stdin
//! closes. Each request is throttled on its own, as one TCP stream over a long path is.

use std::io::{Read as _, Write as _};

use lamina_tests::faultproxy::{Action, FaultProxy, Rule};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(up), Some(rate)) = (args.next(), args.next().and_then(|r| r.parse::<u64>().ok()))
    else {
        eprintln!("usage: throttle-proxy UPSTREAM BYTES_PER_SEC");
        std::process::exit(2);
    };
    let p = FaultProxy::start(&up);
    for m in ["PATCH", "PUT"] {
        p.add(
            Rule::new(m, "/blobs/uploads/")
                .times(u32::MAX)
                .action(Action::Throttle(rate)),
        );
    }
    println!("{}", p.addr());
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}
