//! Re-packing a tar layer as it streams, for conversions whose target wants the files some
//! other way than the source holds them: under a folder (a ModelPack tar of `config.json`
//! becomes a modelcar layer of `models/config.json`), or out of the tar (a ModelKit's tar of
//! one weight file becomes a Docker model's raw layer, the file itself).
//!
//! Push-based and bounded like [`crate::untar`]: bytes of the uncompressed tar in, bytes of the
//! new blob out, nothing held but a header. The entries come out as [`crate::tar::TarWriter`]
//! writes them (owner 0:0, modes 0644/0755, one mtime), so a conversion run twice makes the same
//! layer. Entries that would land outside the folder (`..`, absolute links of a hard link) and
//! devices are refused, as `extract` refuses them.

use crate::compress::{self, Compression, Decoder, StreamError};
use crate::tar::{EntryKind, TarWriter};
use crate::untar::{self, Event, Kind, TarReader};
use crate::Error;

/// What a [`Retar`] makes of the tar it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The same entries under this folder (relative, `/`-separated), the folders above them
    /// first.
    Under(String),
    /// The bytes of the one regular file the tar holds (directories around it are fine);
    /// more than one file, or a link, is an error.
    File,
}

/// The re-packer.
#[derive(Debug)]
pub struct Retar {
    mode: Mode,
    reader: TarReader,
    writer: TarWriter,
    started: bool,
    in_file: bool,
    /// The file of [`Mode::File`], once its header is read.
    file: Option<(String, u64)>,
}

impl Retar {
    /// A re-packer; `mtime` stamps the entries of [`Mode::Under`].
    pub fn new(mode: Mode, mtime: u64) -> Result<Self, Error> {
        if let Mode::Under(p) = &mode {
            if untar::safe_path(p).as_deref() != Some(p.as_str()) {
                return Err(Error::internal(format!(
                    "re-packing under {p:?}, which is not a plain relative path"
                )));
            }
        }
        Ok(Retar {
            mode,
            reader: TarReader::new(),
            writer: TarWriter::new(mtime),
            started: false,
            in_file: false,
            file: None,
        })
    }

    /// The file [`Mode::File`] found: its path in the tar and its size.
    pub fn file(&self) -> Option<&(String, u64)> {
        self.file.as_ref()
    }

    /// Feeds bytes of the source tar; `out` gets the new blob's bytes.
    pub fn write(&mut self, chunk: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        let Retar {
            mode,
            reader,
            writer,
            started,
            in_file,
            file,
        } = self;
        if let (Mode::Under(p), false) = (&*mode, *started) {
            let parts: Vec<&str> = p.split('/').collect();
            for n in 1..=parts.len() {
                writer.entry(&parts[..n].join("/"), &EntryKind::Dir, out)?;
            }
        }
        *started = true;
        reader.write(chunk, &mut |e| match (&*mode, e) {
            (Mode::Under(p), Event::Entry(h)) => {
                let path = untar::safe_path(&h.path).ok_or_else(|| Error::Tar {
                    reason: format!("entry {:?} climbs out of the layer", h.path),
                })?;
                let kind = match &h.kind {
                    Kind::File => EntryKind::File {
                        size: h.size,
                        executable: h.mode & 0o111 != 0,
                    },
                    Kind::Dir => EntryKind::Dir,
                    // a link stays inside the files it was among: one that climbs out of
                    // them is refused; an absolute one (the files' own root) is pointed at
                    // the folder, where that root now is
                    Kind::Symlink(t) => {
                        let at = untar::resolve_link(&path, t).ok_or_else(|| Error::Tar {
                            reason: format!(
                                "symlink {:?} -> {t:?} points out of the layer",
                                h.path
                            ),
                        })?;
                        if t.starts_with('/') {
                            EntryKind::Symlink(if at.is_empty() {
                                format!("/{p}")
                            } else {
                                format!("/{p}/{at}")
                            })
                        } else {
                            EntryKind::Symlink(t.clone())
                        }
                    }
                    Kind::Hardlink(t) => {
                        let t = untar::safe_path(t).ok_or_else(|| Error::Tar {
                            reason: format!("hard link {:?} points out of the layer", h.path),
                        })?;
                        EntryKind::Hardlink(format!("{p}/{t}"))
                    }
                    Kind::Other(flag) => {
                        return Err(Error::Tar {
                            reason: format!(
                                "entry {:?} is a device or FIFO (type {:?}), which a model \
                                 layer does not hold",
                                h.path, *flag as char
                            ),
                        })
                    }
                };
                *in_file = matches!(kind, EntryKind::File { size, .. } if size > 0);
                writer.entry(&format!("{p}/{path}"), &kind, out)
            }
            (Mode::Under(_), Event::Data(d)) => writer.data(d, out),
            (Mode::Under(_), Event::EntryEnd) => {
                if std::mem::take(in_file) {
                    writer.end_file()?;
                }
                Ok(())
            }
            (Mode::File, Event::Entry(h)) => match &h.kind {
                Kind::Dir => Ok(()),
                Kind::File => {
                    if let Some((first, _)) = file {
                        return Err(Error::SeveralFiles {
                            first: first.clone(),
                            second: h.path.clone(),
                        });
                    }
                    *file = Some((h.path.clone(), h.size));
                    Ok(())
                }
                _ => Err(Error::Tar {
                    reason: format!(
                        "the layer holds {:?}, which is not a file: it cannot be one raw file",
                        h.path
                    ),
                }),
            },
            (Mode::File, Event::Data(d)) => {
                out(d);
                Ok(())
            }
            (Mode::File, Event::EntryEnd) => Ok(()),
        })
    }

    /// Ends the source tar: the end of the new tar goes to `out`. A source cut short, or (for
    /// [`Mode::File`]) one that held no file, is an error.
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        self.reader.finish()?;
        match self.mode {
            Mode::Under(_) => {
                if !self.started {
                    self.write(&[], out)?;
                }
                self.writer.finish(out)
            }
            Mode::File if self.file.is_none() => Err(Error::Tar {
                reason: "the layer holds no file".into(),
            }),
            Mode::File => Ok(()),
        }
    }
}

/// A source layer's bytes made the new layer's: decompressed, then re-packed by a [`Retar`]
/// (or left a plain tar with no mode).
pub struct Reshape {
    dec: Box<dyn Decoder<Error>>,
    retar: Option<Retar>,
}

impl std::fmt::Debug for Reshape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reshape")
            .field("retar", &self.retar)
            .finish()
    }
}

fn flatten(e: StreamError<Error>) -> Error {
    match e {
        StreamError::Codec(c) => Error::Codec(c),
        StreamError::Sink(e) => e,
    }
}

impl Reshape {
    /// Decompresses `from`, then re-packs by `mode` (`None`: the plain tar as it is).
    pub fn new(from: Compression, mode: Option<Mode>, mtime: u64) -> Result<Self, Error> {
        Ok(Reshape {
            dec: compress::decoder::<Error>(from),
            retar: mode.map(|m| Retar::new(m, mtime)).transpose()?,
        })
    }

    /// The file [`Mode::File`] found.
    pub fn file(&self) -> Option<&(String, u64)> {
        self.retar.as_ref().and_then(Retar::file)
    }

    /// Feeds source bytes; `out` gets the new layer's bytes.
    pub fn write(&mut self, chunk: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        let Reshape { dec, retar } = self;
        dec.write(chunk, &mut |d: &[u8]| match retar.as_mut() {
            Some(r) => r.write(d, out),
            None => {
                out(d);
                Ok(())
            }
        })
        .map_err(flatten)
    }

    /// Ends the source: the rest of the new layer goes to `out`.
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        let Reshape { dec, retar } = self;
        dec.finish(&mut |d: &[u8]| match retar.as_mut() {
            Some(r) => r.write(d, out),
            None => {
                out(d);
                Ok(())
            }
        })
        .map_err(flatten)?;
        match retar.as_mut() {
            Some(r) => r.finish(out),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn tar_of(entries: &[(&str, EntryKind, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = TarWriter::new(7);
        for (p, k, data) in entries {
            w.entry(p, k, &mut |b| out.extend_from_slice(b)).unwrap();
            if !data.is_empty() {
                w.data(data, &mut |b| out.extend_from_slice(b)).unwrap();
            }
            w.end_file().unwrap();
        }
        w.finish(&mut |b| out.extend_from_slice(b)).unwrap();
        out
    }

    fn run(mode: Mode, tar: &[u8], chunk: usize) -> Result<Vec<u8>, Error> {
        let mut r = Retar::new(mode, 0)?;
        let mut out = Vec::new();
        for c in tar.chunks(chunk.max(1)) {
            r.write(c, &mut |b| out.extend_from_slice(b))?;
        }
        r.finish(&mut |b| out.extend_from_slice(b))?;
        Ok(out)
    }

    fn listing(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut r = TarReader::new();
        let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
        r.write(tar, &mut |e| {
            match e {
                Event::Entry(h) => seen.push((h.path.clone(), Vec::new())),
                Event::Data(d) => seen.last_mut().unwrap().1.extend_from_slice(d),
                Event::EntryEnd => {}
            }
            Ok(())
        })
        .unwrap();
        r.finish().unwrap();
        seen
    }

    fn file(size: u64) -> EntryKind {
        EntryKind::File {
            size,
            executable: false,
        }
    }

    #[test]
    fn a_tar_goes_under_a_folder_at_every_chunk_size() {
        let big = vec![9u8; 1300];
        let src = tar_of(&[
            ("unet", EntryKind::Dir, b""),
            ("unet/model.safetensors", file(1300), &big),
            ("config.json", file(2), b"{}"),
            ("link", EntryKind::Hardlink("config.json".into()), b""),
        ]);
        let want = run(Mode::Under("models".into()), &src, src.len()).unwrap();
        for chunk in [1, 7, 511, 512, 513, 4096] {
            assert_eq!(
                run(Mode::Under("models".into()), &src, chunk).unwrap(),
                want,
                "chunk {chunk}"
            );
        }
        let got = listing(&want);
        let names: Vec<&str> = got.iter().map(|(p, _)| p.trim_end_matches('/')).collect();
        assert_eq!(
            names,
            [
                "models",
                "models/unet",
                "models/unet/model.safetensors",
                "models/config.json",
                "models/link"
            ]
        );
        assert_eq!(got[2].1, big);
        assert_eq!(got[3].1, b"{}");
    }

    #[test]
    fn a_tar_of_one_file_gives_the_file_at_every_chunk_size() {
        let data: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        let src = tar_of(&[
            ("models", EntryKind::Dir, b""),
            ("models/tiny.gguf", file(2000), &data),
        ]);
        for chunk in [1, 3, 512, 1000, 100_000] {
            assert_eq!(run(Mode::File, &src, chunk).unwrap(), data, "chunk {chunk}");
        }
    }

    #[test]
    fn a_gzipped_tar_is_reshaped_at_every_chunk_size() {
        let data = vec![5u8; 3000];
        let src = tar_of(&[("w.bin", file(3000), &data)]);
        let mut gz = Vec::new();
        let mut enc = compress::encoder::<std::convert::Infallible>(Compression::Gzip, None);
        enc.write(&src, &mut |b: &[u8]| {
            gz.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        enc.finish(&mut |b: &[u8]| {
            gz.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        for chunk in [1, 10, 512, 100_000] {
            for (mode, want) in [(None, src.clone()), (Some(Mode::File), data.clone())] {
                let mut r = Reshape::new(Compression::Gzip, mode, 0).unwrap();
                let mut out = Vec::new();
                for c in gz.chunks(chunk) {
                    r.write(c, &mut |b| out.extend_from_slice(b)).unwrap();
                }
                r.finish(&mut |b| out.extend_from_slice(b)).unwrap();
                assert_eq!(out, want, "chunk {chunk}");
            }
        }
        // a cut gzip stream is an error, not a short layer
        let mut r = Reshape::new(Compression::Gzip, None, 0).unwrap();
        r.write(&gz[..gz.len() / 2], &mut |_| {}).unwrap();
        assert!(r.finish(&mut |_| {}).is_err());
    }

    #[test]
    fn what_cannot_be_repacked_is_refused() {
        let two = tar_of(&[("a", file(1), b"a"), ("b", file(1), b"b")]);
        let e = run(Mode::File, &two, 512).unwrap_err().to_string();
        assert!(e.contains("more than one file"), "{e}");
        let none = tar_of(&[("d", EntryKind::Dir, b"")]);
        assert!(run(Mode::File, &none, 512)
            .unwrap_err()
            .to_string()
            .contains("no file"));
        let link = tar_of(&[("l", EntryKind::Symlink("x".into()), b"")]);
        assert!(run(Mode::File, &link, 512).is_err());
        // a source cut short
        let src = tar_of(&[("a", file(1000), &[1u8; 1000])]);
        assert!(run(Mode::Under("m".into()), &src[..1024], 100).is_err());
        assert!(run(Mode::File, &src[..1024], 100).is_err());
        // a hostile name
        let mut evil = tar_of(&[("xx/evil", file(1), b"e")]);
        evil[..5].copy_from_slice(b"../ev");
        // fix the checksum so only the name is wrong
        let sum: u32 = evil[..512]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    *b as u32
                }
            })
            .sum();
        evil[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let e = run(Mode::Under("m".into()), &evil, 512)
            .unwrap_err()
            .to_string();
        assert!(e.contains("climbs out"), "{e}");
        assert!(Retar::new(Mode::Under("../x".into()), 0).is_err());
        let e = run(Mode::File, &two, 512).unwrap_err();
        assert_eq!(
            e,
            Error::SeveralFiles {
                first: "a".into(),
                second: "b".into()
            }
        );
    }

    /// Found by the retar fuzz target's invariant: a symlink was copied as it was, so one
    /// climbing out of the files (`../../etc/passwd`) climbed out of the folder too, and an
    /// absolute one pointed at the image's root instead of the files'.
    #[test]
    fn a_symlink_out_of_the_files_is_refused_and_an_absolute_one_points_into_the_folder() {
        let out = tar_of(&[("a/l", EntryKind::Symlink("../../etc/passwd".into()), b"")]);
        let e = run(Mode::Under("models".into()), &out, 512)
            .unwrap_err()
            .to_string();
        assert!(e.contains("points out of the layer"), "{e}");
        let abs = tar_of(&[
            ("cfg", file(2), b"{}"),
            ("a/l", EntryKind::Symlink("/cfg".into()), b""),
            ("a/r", EntryKind::Symlink("../cfg".into()), b""),
            ("root", EntryKind::Symlink("/".into()), b""),
        ]);
        let got = run(Mode::Under("models".into()), &abs, 100).unwrap();
        let mut r = TarReader::new();
        let mut links = Vec::new();
        r.write(&got, &mut |e| {
            if let Event::Entry(h) = e {
                if let Kind::Symlink(t) = &h.kind {
                    links.push((h.path.clone(), t.clone()));
                }
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            links,
            [
                ("models/a/l".to_string(), "/models/cfg".to_string()),
                ("models/a/r".to_string(), "../cfg".to_string()),
                ("models/root".to_string(), "/models".to_string()),
            ]
        );
    }
}
