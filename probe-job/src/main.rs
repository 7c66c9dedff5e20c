mod collect;

use aya::maps::{HashMap, RingBuf};

fn main() -> anyhow::Result<()> {
    // tests/tests/ship_probe_image.rs checks this line; keep the format
    // that clap's `--version` prints, `llmslo-probe <version>`.
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("llmslo-probe {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let pid: u32 = std::env::args().nth(1).unwrap().parse()?;
    let mut ebpf = collect::loader::load_and_attach(8 << 20)?;
    let mut targets: HashMap<_, u32, u8> =
        HashMap::try_from(ebpf.map_mut("TARGET_TGIDS").unwrap())?;
    targets.insert(&pid, &1, 0)?;
    let mut ring = RingBuf::try_from(ebpf.take_map("EVENTS").unwrap())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut count = 0;
    while std::time::Instant::now() < deadline {
        while let Some(item) = ring.next() {
            count += 1;
            let kind = item[24];
            let fd = i32::from_ne_bytes(item[28..32].try_into().unwrap());
            println!("event kind={kind} fd={fd} len={}", item.len());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!("{count} events");
    Ok(())
}
