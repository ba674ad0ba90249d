// Nina's page script: waveform lanes, playback and transcript sync on a session page;
// latency bookkeeping on the live page. No build step; wavesurfer.js is vendored.
import WaveSurfer from '/assets/wavesurfer-7.12.12.esm.js';

// An audiowaveform v2 .dat file (8-bit, one channel) as interleaved min/max in [-1, 1].
export function parsePeaks(buf) {
  const v = new DataView(buf);
  if (buf.byteLength < 24 || v.getInt32(0, true) !== 2 || v.getUint32(4, true) !== 1) {
    throw new Error('not a version 2, 8-bit peaks file');
  }
  const len = v.getUint32(16, true);
  const body = new Int8Array(buf, 24, Math.min(len * 2, buf.byteLength - 24));
  const out = new Float32Array(body.length);
  for (let i = 0; i < body.length; i++) out[i] = body[i] / 127;
  return out;
}

function sessionPage(audio) {
  const duration = parseFloat(audio.dataset.duration) || 0;
  // Lanes: one waveform per user, all driven by the one <audio>.
  for (const el of document.querySelectorAll('.wave')) {
    fetch(el.dataset.peaks)
      .then((r) => (r.ok ? r.arrayBuffer() : Promise.reject(new Error(r.status))))
      .then((buf) => {
        WaveSurfer.create({
          container: el,
          media: audio,
          peaks: [parsePeaks(buf)],
          duration,
          height: 40,
          waveColor: '#7a8ca5',
          progressColor: '#2d4b73',
          cursorColor: '#c0392b',
          interact: true,
        });
        el.dataset.ready = '1';
      })
      .catch((e) => { el.textContent = 'no waveform (' + e.message + ')'; });
  }
  // Transcript follows playback; a click on a line seeks there.
  const lines = [...document.querySelectorAll('#transcript .line')];
  const starts = lines.map((l) => parseFloat(l.dataset.start));
  let current = null;
  const follow = () => {
    const t = audio.currentTime;
    let lo = 0, hi = starts.length - 1, at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid] <= t + 0.01) { at = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    const line = at >= 0 && t <= parseFloat(lines[at].dataset.end) + 0.5 ? lines[at] : null;
    if (line !== current) {
      current?.classList.remove('current');
      line?.classList.add('current');
      line?.scrollIntoView({ block: 'nearest' });
      current = line;
    }
  };
  audio.addEventListener('timeupdate', follow);
  audio.addEventListener('seeked', follow);
  for (const l of lines) {
    l.addEventListener('click', () => {
      audio.currentTime = parseFloat(l.dataset.start);
      follow();
      audio.play().catch(() => {});
    });
  }
  // The mix or one user; the position is kept.
  const source = document.getElementById('source');
  source?.addEventListener('change', () => {
    const t = audio.currentTime;
    const playing = !audio.paused;
    audio.src = source.value;
    audio.addEventListener('loadedmetadata', () => {
      audio.currentTime = t;
      if (playing) audio.play().catch(() => {});
    }, { once: true });
  });
  // /s/ID#t=SECONDS (search results) seeks there.
  const seekHash = () => {
    const m = /^#t=([0-9.]+)$/.exec(location.hash);
    if (m) { audio.currentTime = parseFloat(m[1]); follow(); }
  };
  window.addEventListener('hashchange', seekHash);
  seekHash();
}

function livePage() {
  // Latency of each utterance event, page clock minus server stamp (same machine in tests).
  window.ninaLatency = [];
  document.body.addEventListener('htmx:sseMessage', (e) => {
    const m = /data-ts="(\d+)"/.exec(e.detail?.data || '');
    if (m && e.detail.type === 'utterance') window.ninaLatency.push(Date.now() - Number(m[1]));
  });
}

const audio = document.getElementById('player');
if (audio) sessionPage(audio);
if (document.getElementById('live')) livePage();
