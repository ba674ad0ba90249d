//! Recording a session as utterances arrive: the step `reprocess file` and the live collector
//! share. Each utterance's WAV is written atomically the moment it is complete; `session.json` is
//! rewritten on [`SessionWriter::checkpoint`] and at the end, so at any time the directory holds
//! whole files only. The writer holds the session's lock for as long as it lives.

use nina_segment::{SampleFormat, Utterance};
use nina_store::{Participant, Session, SessionDir, SessionLock, UtteranceRecord, WavEncoding};

use crate::PipelineError;

/// Writes one session's utterances, from any number of streams (one per user).
#[derive(Debug)]
pub struct SessionWriter {
    dir: SessionDir,
    session: Session,
    tag: Option<String>,
    lock: SessionLock,
}

impl SessionWriter {
    /// Starts recording `session` (its participants and utterances may be empty) into `dir`,
    /// whose lock the caller took with [`SessionDir::claim`].
    pub fn new(dir: SessionDir, session: Session, lock: SessionLock) -> Self {
        Self {
            dir,
            session,
            tag: None,
            lock,
        }
    }

    /// Names utterance files with `tag` too (see [`nina_store::utterance_file`]), so that they
    /// never overwrite the files of another segmentation of the same session.
    pub fn tagged(mut self, tag: &str) -> Self {
        self.tag = Some(tag.to_string());
        self
    }

    /// The session directory.
    pub fn dir(&self) -> &SessionDir {
        &self.dir
    }

    /// The session as recorded so far.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The session, to amend what is not utterances (participants' presence, gaps, the
    /// recorder); utterances go through [`SessionWriter::utterance`].
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Adds a participant, or updates their display name (it lives only in `session.json`).
    pub fn participant(&mut self, user_id: u64, display_name: Option<String>) {
        match self
            .session
            .participants
            .iter_mut()
            .find(|p| p.user_id == user_id)
        {
            Some(p) => {
                if display_name.is_some() {
                    p.display_name = display_name;
                }
            }
            None => self.session.participants.push(Participant {
                user_id,
                display_name,
                presence: Vec::new(),
            }),
        }
    }

    /// Writes an utterance of `user_id`'s stream to `audio/<user_id>/<seq>-<start_ms>.wav` (at the
    /// source's rate, channels and sample format) and records it.
    pub fn utterance(
        &mut self,
        user_id: u64,
        u: &Utterance,
    ) -> Result<&UtteranceRecord, PipelineError> {
        self.participant(user_id, None);
        let file = nina_store::utterance_file(user_id, u.seq, u.start, self.tag.as_deref());
        let path = self.dir.file(&file)?;
        let f = u.format;
        let encoding = match f.format {
            SampleFormat::I16 => WavEncoding::I16,
            SampleFormat::F32 => WavEncoding::F32,
        };
        nina_store::write_wav(&path, &u.samples, f.sample_rate, f.channels, encoding)?;
        self.session.utterances.push(UtteranceRecord {
            user_id,
            seq: u.seq,
            start: u.start,
            end: u.end,
            speech_start: u.speech_start,
            speech_end: u.speech_end,
            cut: u.cut,
            file,
            sample_rate: f.sample_rate,
            channels: f.channels,
        });
        let last = self.session.utterances.len() - 1;
        Ok(&self.session.utterances[last])
    }

    fn sort(&mut self) {
        self.session.utterances.sort_by(|a, b| {
            a.start
                .total_cmp(&b.start)
                .then(a.user_id.cmp(&b.user_id))
                .then(a.seq.cmp(&b.seq))
        });
    }

    /// Saves `session.json` with what is recorded so far (utterances sorted by start).
    pub fn checkpoint(&mut self) -> Result<(), PipelineError> {
        self.sort();
        self.dir.save(&self.session)?;
        Ok(())
    }

    /// Ends the recording at `ended_at_ms`, saves `session.json` and returns the session.
    pub fn finish(mut self, ended_at_ms: Option<i64>) -> Result<Session, PipelineError> {
        self.session.ended_at_ms = ended_at_ms;
        self.checkpoint()?;
        Ok(self.session)
    }

    /// Gives the session back without saving, to amend it before [`SessionDir::save`], with the
    /// lock (keep it until the session is saved).
    pub fn into_parts(mut self) -> (Session, SessionLock) {
        self.sort();
        (self.session, self.lock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nina_segment::{SampleFormat, StreamFormat};

    fn utt(seq: u64, start: f64) -> Utterance {
        Utterance {
            seq,
            start,
            end: start + 1.0,
            speech_start: start + 0.2,
            speech_end: start + 0.8,
            cut: false,
            format: StreamFormat {
                sample_rate: 48_000,
                channels: 2,
                format: SampleFormat::I16,
            },
            samples: vec![0.25; 96_000],
            audio_16k: vec![0.25; 16_000],
        }
    }

    #[test]
    fn streams_of_several_users_make_one_session() {
        let dir = tempfile::tempdir().unwrap();
        let sd = SessionDir::new(dir.path().join("s"));
        let skeleton = Session::new(
            "live-1",
            nina_store::Place {
                id: 1,
                name: Some("g".into()),
            },
            nina_store::Place { id: 2, name: None },
            0,
        );
        let (lock, _) = sd.claim().unwrap();
        let mut w = SessionWriter::new(sd.clone(), skeleton, lock);
        w.participant(7, Some("Ann/../../x".into()));
        w.utterance(7, &utt(0, 3.0)).unwrap();
        w.utterance(9, &utt(0, 1.0)).unwrap();
        w.checkpoint().unwrap();
        assert_eq!(sd.load().unwrap().utterances.len(), 2);
        w.utterance(7, &utt(1, 5.0)).unwrap();
        let s = w.finish(Some(10_000)).unwrap();
        let order: Vec<(u64, u64)> = s.utterances.iter().map(|u| (u.user_id, u.seq)).collect();
        assert_eq!(order, [(9, 0), (7, 0), (7, 1)]);
        assert_eq!(s.participants.len(), 2);
        assert_eq!(sd.load().unwrap(), s);
        for u in &s.utterances {
            assert!(u.file.starts_with(&format!("audio/{}/", u.user_id)));
            let a = nina_store::read_wav(&sd.root().join(&u.file), usize::MAX).unwrap();
            assert_eq!(
                (a.sample_rate, a.channels, a.samples.len()),
                (48_000, 2, 96_000)
            );
        }
    }
}
