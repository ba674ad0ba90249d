//! Downloads: a zip of per-user FLAC tracks written to the client as it is made.
//!
//! The zip is written forward only (no seeking): each entry is stored (FLAC is already
//! compressed) with a data descriptor after its bytes, and the central directory comes last.
//! Entries and the archive are limited to 4 GiB (no Zip64).

use std::io::{self, Write};

use nina_store::{Session, SessionDir};

/// Writes a zip archive to `w` without seeking.
pub struct ZipStream<W: Write> {
    w: W,
    offset: u64,
    central: Vec<u8>,
    entries: u16,
}

struct Open {
    name: Vec<u8>,
    header_at: u64,
    crc: crc32fast::Hasher,
    size: u64,
}

/// One entry being written; finish it with [`ZipStream::end_file`].
pub struct Entry(Open);

fn too_big() -> io::Error {
    io::Error::other("zip entry or archive over 4 GiB")
}

impl<W: Write> ZipStream<W> {
    /// An archive written to `w`.
    pub fn new(w: W) -> Self {
        Self {
            w,
            offset: 0,
            central: Vec::new(),
            entries: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.offset += b.len() as u64;
        Ok(())
    }

    /// Starts an entry named `name` (UTF-8, `/`-separated).
    pub fn start_file(&mut self, name: &str) -> io::Result<Entry> {
        let name = name.as_bytes().to_vec();
        let header_at = self.offset;
        let mut h = Vec::with_capacity(30 + name.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes()); // version needed
        h.extend_from_slice(&0x0808u16.to_le_bytes()); // data descriptor, UTF-8 name
        h.extend_from_slice(&0u16.to_le_bytes()); // stored
        h.extend_from_slice(&0u32.to_le_bytes()); // time, date
        h.extend_from_slice(&[0; 12]); // crc, sizes: in the descriptor
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&name);
        self.put(&h)?;
        Ok(Entry(Open {
            name,
            header_at,
            crc: crc32fast::Hasher::new(),
            size: 0,
        }))
    }

    /// Writes bytes of the entry.
    pub fn write(&mut self, e: &mut Entry, b: &[u8]) -> io::Result<()> {
        e.0.crc.update(b);
        e.0.size += b.len() as u64;
        if e.0.size > u64::from(u32::MAX) {
            return Err(too_big());
        }
        self.put(b)
    }

    /// Ends the entry: its data descriptor, and its central directory record for later.
    pub fn end_file(&mut self, e: Entry) -> io::Result<()> {
        let Open {
            name,
            header_at,
            crc,
            size,
        } = e.0;
        let crc = crc.finalize();
        let size32 = u32::try_from(size).map_err(|_| too_big())?;
        let at32 = u32::try_from(header_at).map_err(|_| too_big())?;
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        d.extend_from_slice(&crc.to_le_bytes());
        d.extend_from_slice(&size32.to_le_bytes());
        d.extend_from_slice(&size32.to_le_bytes());
        self.put(&d)?;
        let c = &mut self.central;
        c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        c.extend_from_slice(&20u16.to_le_bytes()); // made by
        c.extend_from_slice(&20u16.to_le_bytes()); // needed
        c.extend_from_slice(&0x0808u16.to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes());
        c.extend_from_slice(&0u32.to_le_bytes());
        c.extend_from_slice(&crc.to_le_bytes());
        c.extend_from_slice(&size32.to_le_bytes());
        c.extend_from_slice(&size32.to_le_bytes());
        c.extend_from_slice(&(name.len() as u16).to_le_bytes());
        c.extend_from_slice(&[0; 12]); // extra, comment, disk, attributes (internal 2 + external 4)
        c.extend_from_slice(&at32.to_le_bytes());
        c.extend_from_slice(&name);
        self.entries = self.entries.checked_add(1).ok_or_else(too_big)?;
        Ok(())
    }

    /// Writes the central directory and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let at = u32::try_from(self.offset).map_err(|_| too_big())?;
        let central = std::mem::take(&mut self.central);
        self.put(&central)?;
        let mut e = Vec::with_capacity(22);
        e.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        e.extend_from_slice(&[0; 4]);
        e.extend_from_slice(&self.entries.to_le_bytes());
        e.extend_from_slice(&self.entries.to_le_bytes());
        e.extend_from_slice(&(central.len() as u32).to_le_bytes());
        e.extend_from_slice(&at.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        self.put(&e)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// A user's utterances laid on the session clock as one mono 16-bit stream, read block by block
/// (silence between utterances), for the FLAC encoder.
struct Timeline<'a> {
    dir: &'a SessionDir,
    utterances: Vec<&'a nina_store::UtteranceRecord>,
    rate: u32,
    total: u64,
    pos: u64,
    next: usize,
    /// The utterance being read: its first sample on the timeline and its mono samples.
    current: Option<(u64, Vec<i32>)>,
}

impl Timeline<'_> {
    fn sample(&mut self, at: u64) -> i32 {
        loop {
            if let Some((start, s)) = &self.current {
                if at < *start {
                    return 0;
                }
                if let Some(v) = s.get((at - start) as usize) {
                    return *v;
                }
            }
            let Some(&u) = self.utterances.get(self.next) else {
                return 0;
            };
            let start = (u.start.max(0.0) * f64::from(self.rate)).round() as u64;
            if start > at {
                return 0;
            }
            self.next += 1;
            let mono = self
                .dir
                .file(&u.file)
                .ok()
                .and_then(|p| nina_store::read_wav(&p, (self.rate as usize) * 7200).ok())
                .filter(|w| w.sample_rate == self.rate)
                .map(|w| {
                    let c = usize::from(w.channels.max(1));
                    w.samples
                        .chunks(c)
                        .map(|f| {
                            i32::from(nina_store::audio::f32_to_i16(
                                f.iter().sum::<f32>() / c as f32,
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.current = Some((start, mono));
        }
    }
}

impl flacenc::source::Source for Timeline<'_> {
    fn channels(&self) -> usize {
        1
    }
    fn bits_per_sample(&self) -> usize {
        16
    }
    fn sample_rate(&self) -> usize {
        self.rate as usize
    }
    fn read_samples<F: flacenc::source::Fill>(
        &mut self,
        block_size: usize,
        dest: &mut F,
    ) -> Result<usize, flacenc::error::SourceError> {
        let n = (self.total.saturating_sub(self.pos)).min(block_size as u64) as usize;
        let mut buf = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let v = self.sample(self.pos + i);
            buf.push(v);
        }
        self.pos += n as u64;
        dest.fill_interleaved(&buf)?;
        Ok(n)
    }
    fn len_hint(&self) -> Option<usize> {
        Some(self.total as usize)
    }
}

/// Why a FLAC track could not be made.
#[derive(Debug, thiserror::Error)]
#[error("FLAC encoding: {0}")]
pub struct FlacError(String);

fn flac_error(e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(FlacError(format!("{e:?}")))
}

/// Writes one user's audio on the session clock to `out` as a FLAC file (mono, 16-bit, at the
/// rate of their first utterance; utterances at another rate are left silent), frame by frame:
/// one block of samples and one utterance are in memory at a time, whatever the session's
/// length. STREAMINFO, written first, holds the block size and the sample count; its frame
/// sizes and MD5 are zeros ("unknown" to a decoder).
pub fn write_user_flac<W: Write>(
    dir: &SessionDir,
    s: &Session,
    user: u64,
    out: &mut W,
) -> io::Result<()> {
    use flacenc::component::{BitRepr, Stream};
    use flacenc::error::Verify;
    use flacenc::source::{FrameBuf, Source};
    let mut utterances: Vec<_> = s.utterances.iter().filter(|u| u.user_id == user).collect();
    utterances.sort_by(|a, b| a.start.total_cmp(&b.start));
    let rate = utterances.first().map(|u| u.sample_rate).unwrap_or(48_000);
    let total = (nina_store::peaks::session_seconds(s) * f64::from(rate)).round() as u64;
    let mut src = Timeline {
        dir,
        utterances,
        rate,
        total,
        pos: 0,
        next: 0,
        current: None,
    };
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .map_err(flac_error)?;
    let block = config.block_size;
    // A stream without frames is the file's header: "fLaC" and its STREAMINFO.
    let mut head = Stream::new(rate as usize, 1, 16).map_err(flac_error)?;
    head.stream_info_mut()
        .set_block_sizes(block, block)
        .map_err(flac_error)?;
    head.stream_info_mut().set_total_samples(total as usize);
    // Frame sizes are not known before the frames are made: 0 says "unknown".
    head.stream_info_mut()
        .set_frame_sizes(0, 0)
        .map_err(flac_error)?;
    let mut sink = flacenc::bitsink::ByteSink::new();
    head.write(&mut sink).map_err(flac_error)?;
    out.write_all(sink.as_slice())?;
    let mut buf = FrameBuf::with_size(1, block).map_err(flac_error)?;
    for number in 0.. {
        if src.read_samples(block, &mut buf).map_err(flac_error)? == 0 {
            break;
        }
        let frame = flacenc::encode_fixed_size_frame(&config, &buf, number, head.stream_info())
            .map_err(flac_error)?;
        sink.clear();
        frame.write(&mut sink).map_err(flac_error)?;
        out.write_all(sink.as_slice())?;
    }
    Ok(())
}

/// An entry of a [`ZipStream`] as an [`io::Write`].
struct EntryWriter<'a, W: Write>(&'a mut ZipStream<W>, &'a mut Entry);

impl<W: Write> Write for EntryWriter<'_, W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(self.1, b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A file-name-safe form of a display name.
pub fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if s.is_empty() { "user".into() } else { s }
}

/// Writes the zip of every user's FLAC track of the session to `w`, one entry after another
/// (`<name>-<user_id>.flac`).
pub fn write_users_zip<W: Write>(dir: &SessionDir, s: &Session, w: W) -> io::Result<W> {
    let mut users: Vec<u64> = s.utterances.iter().map(|u| u.user_id).collect();
    users.sort_unstable();
    users.dedup();
    let mut z = ZipStream::new(w);
    for u in users {
        let name = s
            .participants
            .iter()
            .find(|p| p.user_id == u)
            .and_then(|p| p.display_name.clone())
            .unwrap_or_else(|| u.to_string());
        let mut e = z.start_file(&format!("{}-{u}.flac", safe_name(&name)))?;
        write_user_flac(dir, s, u, &mut EntryWriter(&mut z, &mut e))?;
        z.end_file(e)?;
    }
    z.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn zip_reads_back() {
        let mut z = ZipStream::new(Vec::new());
        let mut e = z.start_file("a/ü.txt").unwrap();
        z.write(&mut e, b"hello ").unwrap();
        z.write(&mut e, b"world").unwrap();
        z.end_file(e).unwrap();
        let e = z.start_file("empty").unwrap();
        z.end_file(e).unwrap();
        let bytes = z.finish().unwrap();
        let mut a = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(a.len(), 2);
        let mut s = String::new();
        a.by_name("a/ü.txt")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello world");
        assert_eq!(a.by_name("empty").unwrap().size(), 0);
    }

    #[test]
    fn names_are_safe() {
        assert_eq!(safe_name("../Ann B"), "___Ann_B");
        assert_eq!(safe_name(""), "user");
        assert_eq!(safe_name("Zoë"), "Zoë");
    }
}
