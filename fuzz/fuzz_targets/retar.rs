//! Re-packing a tar as it streams (what `convert` does to a layer whose packing must change).
//!
//! Entry points: `retar::Retar::{new, write, finish, file}` in both modes, and
//! `retar::Reshape` over a gzip stream of the same tar.
//! Input: see `lamina_fuzz::Input`; bit 4 of the flags picks `Mode::File` (else
//! `Mode::Under("models")`), bit 5 runs the gzip `Reshape` too.
//! Invariants: nothing panics; the output and the outcome do not depend on how the input is
//! split; a `Mode::Under` result is a tar that `untar` reads, every entry of it under `models/`
//! at a safe path with no link leaving the folder; a `Mode::File` result is the content of the
//! one file the source holds, of the size its header says; a gzip `Reshape` of the same tar
//! gives the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::compress::Compression;
use lamina_core::retar::{Mode, Reshape, Retar};
use lamina_core::untar::{resolve_link, safe_path, Event, Kind, TarReader};

fn run(mode: &Mode, pieces: &[&[u8]]) -> (Vec<u8>, bool, Option<(String, u64)>) {
    let Ok(mut r) = Retar::new(mode.clone(), 1_700_000_000) else {
        panic!("a plain folder is refused")
    };
    let mut out = Vec::new();
    for p in pieces {
        if r.write(p, &mut |b| out.extend_from_slice(b)).is_err() {
            return (out, false, None);
        }
    }
    let ok = r.finish(&mut |b| out.extend_from_slice(b)).is_ok();
    (out, ok, r.file().cloned())
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = lamina_fuzz::Input::new(data) else {
        return;
    };
    let mode = if input.flags & 0x10 != 0 {
        Mode::File
    } else {
        Mode::Under("models".into())
    };
    let (whole, whole_ok, file) = run(&mode, &[input.payload]);
    let (split, split_ok, _) = run(&mode, &input.pieces());
    assert_eq!(whole_ok, split_ok, "the outcome depends on the split");
    if whole_ok {
        assert_eq!(whole, split, "the output depends on the split");
    }
    if !whole_ok {
        return;
    }
    match &mode {
        Mode::Under(_) => {
            let mut reader = TarReader::new();
            let mut res = reader.write(&whole, &mut |e| {
                if let Event::Entry(h) = e {
                    // a directory's name ends in `/`, as tar writes it
                    let name = match h.kind {
                        Kind::Dir => h.path.strip_suffix('/').unwrap_or(&h.path),
                        _ => &h.path,
                    };
                    assert_eq!(safe_path(name).as_deref(), Some(name), "{:?}", h.path);
                    assert!(h.path == "models" || h.path.starts_with("models/"), "{:?}", h.path);
                    if let Kind::Symlink(t) = &h.kind {
                        let r = resolve_link(&h.path, t);
                        assert!(
                            r.as_deref().is_some_and(|r| r == "models" || r.starts_with("models/")),
                            "{:?} -> {t:?} leaves the folder",
                            h.path
                        );
                    }
                    if let Kind::Hardlink(t) = &h.kind {
                        assert!(t.starts_with("models/"), "{:?} -> {t:?}", h.path);
                    }
                }
                Ok(())
            });
            if res.is_ok() {
                res = reader.finish();
            }
            assert!(res.is_ok(), "the re-packed tar does not read back: {res:?}");
        }
        Mode::File => {
            let (path, size) = file.expect("a file was found");
            assert!(safe_path(&path).is_some(), "{path:?}");
            assert_eq!(whole.len() as u64, size, "the file's bytes, as many as its header says");
        }
    }
    if input.flags & 0x20 != 0 && input.payload.len() < 1 << 20 {
        // the same tar, gzipped: the reshape decodes it first and gives the same bytes
        let mut gz = Vec::new();
        let mut enc = lamina_core::compress::encoder::<std::convert::Infallible>(Compression::Gzip, Some(1));
        let mut sink = |b: &[u8]| {
            gz.extend_from_slice(b);
            Ok(())
        };
        assert!(enc.write(input.payload, &mut sink).is_ok() && enc.finish(&mut sink).is_ok());
        let Ok(mut r) = Reshape::new(Compression::Gzip, Some(mode.clone()), 1_700_000_000) else {
            panic!("reshape refused")
        };
        let mut out = Vec::new();
        let mut ok = true;
        for p in lamina_fuzz::pieces(&gz, input.ctl) {
            if r.write(p, &mut |b| out.extend_from_slice(b)).is_err() {
                ok = false;
                break;
            }
        }
        ok = ok && r.finish(&mut |b| out.extend_from_slice(b)).is_ok();
        assert!(ok, "the gzip reshape failed where the plain one did not");
        assert_eq!(out, whole, "the gzip reshape gives other bytes");
    }
});
