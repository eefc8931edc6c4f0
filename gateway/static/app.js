// The gateway's own web page: read-aloud, talk and transcribe panels over the gateway's public API.
// No build step and no CDN: plain ES modules, served by the gateway, working offline.

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const apiKey = params.get('api_key');
const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
const authHeaders = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
const wsUrl = (path) => `${wsBase}${path}${apiKey ? `?api_key=${encodeURIComponent(apiKey)}` : ''}`;

// ---------------------------------------------------------------------------------------------
// Gap-free PCM playback: each chunk is scheduled right after the previous one on one AudioContext.
class Player {
  constructor() { this.ctx = null; this.nextTime = 0; this.sources = new Set(); this.rate = 24000; }
  ensure(rate) {
    if (!this.ctx || this.rate !== rate) {
      if (this.ctx) this.ctx.close();
      this.rate = rate;
      this.ctx = new AudioContext({ sampleRate: rate });
      this.nextTime = 0;
    }
    if (this.ctx.state === 'suspended' && !this.paused) this.ctx.resume();
    return this.ctx;
  }
  // Returns the context time at which this chunk starts playing.
  enqueue(arrayBuffer, rate = this.rate) {
    const ctx = this.ensure(rate);
    const pcm = new Int16Array(arrayBuffer);
    const buf = ctx.createBuffer(1, pcm.length, rate);
    const ch = buf.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
    const src = ctx.createBufferSource();
    src.buffer = buf;
    src.connect(ctx.destination);
    const start = Math.max(this.nextTime, ctx.currentTime + 0.05);
    src.start(start);
    this.nextTime = start + buf.duration;
    this.sources.add(src);
    src.onended = () => this.sources.delete(src);
    return start;
  }
  get now() { return this.ctx ? this.ctx.currentTime : 0; }
  get pending() { return this.ctx ? Math.max(0, this.nextTime - this.ctx.currentTime) : 0; }
  pause() { this.paused = true; if (this.ctx) this.ctx.suspend(); }
  resume() { this.paused = false; if (this.ctx) this.ctx.resume(); }
  flush() {
    for (const s of this.sources) { try { s.stop(); } catch { /* already stopped */ } }
    this.sources.clear();
    this.nextTime = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Status strip
async function refreshStatus() {
  try {
    const [health, models] = await Promise.all([
      fetch('/health', { headers: authHeaders }).then((r) => r.json()),
      fetch('/models', { headers: authHeaders }).then((r) => r.json()),
    ]);
    const h = $('#status-health');
    h.textContent = `health: ${health.status}`;
    h.className = `pill ${health.status === 'ok' ? 'ok' : 'bad'}`;
    $('#status-engine').textContent = `engine: ${health.engine}`;
    $('#status-models').textContent = (models.models || []).map((m) => `${m.role}: ${m.id.split('/').pop()} (${m.state})`).join(' · ');
    const g = health.gpu || {};
    $('#status-gpu').textContent = g.available
      ? `GPU ${g.index}: ${g.utilization_percent}% · ${Math.round(g.memory_used_mb)}/${Math.round(g.memory_total_mb)} MB`
      : 'no GPU';
  } catch (e) {
    const h = $('#status-health');
    h.textContent = 'gateway unreachable';
    h.className = 'pill bad';
  }
}

async function loadLanguages() {
  try {
    const body = await fetch('/languages', { headers: authHeaders }).then((r) => r.json());
    const voice = $('#read-voice');
    voice.replaceChildren(...body.voices.map((v) => new Option(v.name, v.id)));
    const lang = $('#read-language');
    lang.replaceChildren(...body.languages.tts.map((l) => new Option(l.name, l.code)));
  } catch { /* the status strip already says the gateway is unreachable */ }
}

// ---------------------------------------------------------------------------------------------
// Tabs (arrow keys move between them, as the ARIA tabs pattern expects)
function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute('aria-selected', String(on));
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute('aria-controls')).hidden = !on;
    }
    tab.focus();
  };
  tabs.forEach((t, i) => {
    t.addEventListener('click', () => select(t));
    t.addEventListener('keydown', (e) => {
      if (e.key === 'ArrowRight') select(tabs[(i + 1) % tabs.length]);
      if (e.key === 'ArrowLeft') select(tabs[(i - 1 + tabs.length) % tabs.length]);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Read-aloud panel: WS /read/stream with pause/resume/cancel and sentence highlighting from `mark` events.
const read = { ws: null, player: new Player(), frames: 0, bytes: 0, marks: [], timer: null, rate: 24000 };

function setReadState(state, text) {
  const el = $('#read-state');
  el.dataset.state = state;
  el.textContent = text;
  const playing = state === 'playing' || state === 'paused' || state === 'starting';
  $('#read-play').disabled = playing;
  $('#read-pause').disabled = state !== 'playing';
  $('#read-resume').disabled = state !== 'paused';
  $('#read-cancel').disabled = !playing;
}

function renderReadText(text) {
  const view = $('#read-view');
  view.replaceChildren();
  view.dataset.highlighted = '-1';
  view.dataset.text = text;
}

// Sentence highlighted; inside it, the word being spoken (word marks point into the ORIGINAL text).
function highlight(sentence, word) {
  const view = $('#read-view');
  const text = view.dataset.text || '';
  const cur = document.createElement('span');
  cur.className = 'current';
  if (word && word.start >= sentence.start && word.end <= sentence.end) {
    const w = document.createElement('span');
    w.className = 'word';
    w.textContent = text.slice(word.start, word.end);
    cur.append(text.slice(sentence.start, word.start), w, text.slice(word.end, sentence.end));
  } else {
    cur.textContent = text.slice(sentence.start, sentence.end);
  }
  view.replaceChildren(text.slice(0, sentence.start), cur, text.slice(sentence.end));
  view.dataset.highlighted = String(sentence.index);
  view.dataset.word = word ? String(word.index) : '-1';
}

function tickMarks() {
  // Highlight the latest sentence (and word) whose audio has started playing.
  const now = read.player.now;
  let sentence = null;
  let word = null;
  for (const m of read.marks) {
    if (m.at === null || m.at > now) continue;
    if (m.kind === 'word') word = m; else { sentence = m; word = null; }
  }
  const view = $('#read-view');
  if (sentence && (view.dataset.highlighted !== String(sentence.index)
      || view.dataset.word !== (word ? String(word.index) : '-1'))) highlight(sentence, word);
}

function readStream() {
  const text = $('#read-text').value;
  if (!text.trim()) { setReadState('error', 'Enter some text first.'); return; }
  read.player.flush();
  read.player.resume();
  read.frames = 0; read.bytes = 0; read.samples = 0; read.marks = []; read.pending = [];
  renderReadText(text);
  setReadState('starting', 'Connecting…');
  const ws = new WebSocket(wsUrl('/read/stream'));
  ws.binaryType = 'arraybuffer';
  read.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({
    type: 'start', text, voice: $('#read-voice').value || 'default',
    language: $('#read-language').value || 'en', speed: Number($('#read-speed').value), word_marks: true,
  }));
  ws.onmessage = (ev) => {
    if (ev.data instanceof ArrayBuffer) {
      const at = read.player.enqueue(ev.data, read.rate);
      // Marks name the absolute sample they start at: place each inside the frame that holds it.
      const first = read.samples;
      read.samples += ev.data.byteLength / 2;
      read.pending = read.pending.filter((m) => {
        if (m.sample >= read.samples) return true;
        m.at = at + Math.max(0, m.sample - first) / read.rate;
        return false;
      });
      read.frames += 1; read.bytes += ev.data.byteLength;
      const stats = $('#read-stats');
      stats.dataset.frames = String(read.frames);
      stats.dataset.bytes = String(read.bytes);
      stats.textContent = `${read.frames} audio frames, ${(read.bytes / 2 / read.rate).toFixed(1)} s received`;
      return;
    }
    const msg = JSON.parse(ev.data);
    switch (msg.type) {
      case 'started': read.rate = msg.sample_rate || 24000; setReadState('playing', 'Playing'); break;
      case 'mark': {
        const m = { kind: msg.kind, index: msg.index, start: msg.char_start, end: msg.char_end,
          sample: msg.sample_offset ?? read.samples, at: null };
        read.marks.push(m); read.pending.push(m); break;
      }
      case 'paused': setReadState('paused', 'Paused'); break;
      case 'resumed': setReadState('playing', 'Playing'); break;
      case 'cancelled': setReadState('idle', 'Cancelled'); read.player.flush(); ws.close(); break;
      case 'complete': setReadState('done', `Finished: ${Number(msg.duration || 0).toFixed(1)} s of audio`); break;
      case 'error': setReadState('error', `Error: ${msg.message}`); break;
      default: break;
    }
  };
  ws.onclose = () => { if ($('#read-state').dataset.state === 'starting') setReadState('error', 'Connection closed.'); };
  ws.onerror = () => setReadState('error', 'Connection failed: is the gateway running?');
}

function setupRead() {
  $('#read-speed').addEventListener('input', (e) => { $('#read-speed-value').textContent = `${Number(e.target.value).toFixed(1)}×`; });
  $('#read-play').addEventListener('click', readStream);
  $('#read-pause').addEventListener('click', () => { read.player.pause(); read.ws?.send(JSON.stringify({ type: 'pause' })); });
  $('#read-resume').addEventListener('click', () => { read.player.resume(); read.ws?.send(JSON.stringify({ type: 'resume' })); });
  $('#read-cancel').addEventListener('click', () => { read.player.flush(); read.ws?.send(JSON.stringify({ type: 'cancel' })); });
  $('#read-download').addEventListener('click', async () => {
    const res = await fetch('/read', {
      method: 'POST', headers: { 'Content-Type': 'application/json', ...authHeaders },
      body: JSON.stringify({ text: $('#read-text').value, voice: $('#read-voice').value || 'default',
        language: $('#read-language').value || 'en', speed: Number($('#read-speed').value) }),
    });
    if (!res.ok) { setReadState('error', `Error: ${(await res.json()).error?.message}`); return; }
    const a = document.createElement('a');
    a.href = URL.createObjectURL(await res.blob());
    a.download = 'read-aloud.wav';
    a.click();
  });
  read.timer = setInterval(tickMarks, 50);
}

// ---------------------------------------------------------------------------------------------
// Talk panel: WS /voice, microphone through an AudioWorklet (24 kHz s16le), barge-in, reconnect.
const talk = { ws: null, player: new Player(), mic: null, ctx: null, node: null, sending: false,
  retries: 0, wanted: false, replyEl: null, audioBytes: 0 };

function setTalkState(state, text) {
  const el = $('#talk-state');
  el.dataset.state = state;
  el.textContent = text;
  const on = state !== 'idle' && state !== 'error';
  $('#talk-connect').disabled = on;
  $('#talk-hangup').disabled = !on;
  $('#talk-stop').disabled = !on;
  $('#talk-ptt').disabled = !on || talkMode() !== 'ptt';
}

const talkMode = () => document.querySelector('input[name="talk-mode"]:checked').value;

function logLine(cls, text) {
  const li = document.createElement('li');
  li.className = cls;
  li.textContent = text;
  $('#talk-log').append(li);
  return li;
}

function bump(key, by = 1) {
  const log = $('#talk-log');
  log.dataset[key] = String(Number(log.dataset[key] || 0) + by);
}

async function startMic() {
  if (talk.mic) return;
  try {
    talk.mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
  } catch (e) {
    setTalkState('error', e.name === 'NotAllowedError'
      ? 'Microphone access was denied: allow it in the browser to talk.'
      : `No microphone available (${e.name}).`);
    throw e;
  }
  talk.ctx = new AudioContext();
  await talk.ctx.audioWorklet.addModule('/static/capture-worklet.js');
  talk.node = new AudioWorkletNode(talk.ctx, 'capture-24k');
  talk.node.port.onmessage = (ev) => {
    if (ev.data.level !== undefined) {
      const meter = $('#talk-level');
      meter.value = Math.min(1, ev.data.level * 4);
      meter.dataset.peak = String(Math.max(Number(meter.dataset.peak || 0), meter.value));
      return;
    }
    if (talk.sending && talk.ws?.readyState === WebSocket.OPEN) talk.ws.send(ev.data.pcm);
  };
  talk.ctx.createMediaStreamSource(talk.mic).connect(talk.node);
}

function stopMic() {
  talk.mic?.getTracks().forEach((t) => t.stop());
  talk.ctx?.close();
  talk.mic = null; talk.ctx = null; talk.node = null;
}

function connectVoice() {
  talk.wanted = true;
  setTalkState('connecting', 'Connecting…');
  const ws = new WebSocket(wsUrl('/voice'));
  ws.binaryType = 'arraybuffer';
  talk.ws = ws;
  ws.onopen = async () => {
    talk.retries = 0;
    const vad = talkMode() === 'vad';
    ws.send(JSON.stringify({ type: 'session.update', session: { turn_detection: vad ? { type: 'server_vad' } : null } }));
    // Without a microphone there is nothing to reconnect for: keep the explanation on screen.
    try { await startMic(); } catch { talk.wanted = false; ws.close(); return; }
    talk.sending = vad;
    setTalkState('listening', vad ? 'Listening: just speak.' : 'Hold the button (or Space) while you speak.');
  };
  ws.onmessage = (ev) => {
    if (ev.data instanceof ArrayBuffer) {
      talk.player.enqueue(ev.data, 24000);
      talk.audioBytes += ev.data.byteLength;
      bump('audioBytes', ev.data.byteLength);
      return;
    }
    const msg = JSON.parse(ev.data);
    switch (msg.type) {
      case 'speech.started':
        // Barge-in: the server stops the reply; stop what is already queued here too.
        talk.player.flush(); setTalkState('listening', 'Hearing you…'); break;
      case 'speech.stopped': setTalkState('thinking', 'Thinking…'); break;
      case 'transcript': logLine('user', `You: ${msg.text}`); bump('transcripts'); break;
      case 'response.started': talk.replyEl = logLine('bot', 'Assistant: '); setTalkState('speaking', 'Speaking…'); break;
      case 'response.text.delta':
        if (!talk.replyEl) talk.replyEl = logLine('bot', 'Assistant: ');
        talk.replyEl.textContent += msg.delta ?? msg.text ?? ''; break;
      case 'response.done': bump('replies'); talk.replyEl = null; setTalkState('listening', 'Your turn.'); break;
      case 'interrupted': talk.player.flush(); talk.replyEl = null; setTalkState('listening', 'Interrupted: your turn.'); break;
      case 'error': logLine('err', `Error: ${msg.message}`); break;
      default: break;
    }
  };
  ws.onclose = (ev) => {
    talk.sending = false;
    if (!talk.wanted) return;
    if (talk.retries >= 5) { setTalkState('error', `Connection lost (${ev.code}). Press Start to try again.`); talk.wanted = false; return; }
    const delay = 500 * 2 ** talk.retries++;
    setTalkState('connecting', `Connection lost (${ev.code} ${ev.reason || ''}); reconnecting in ${delay / 1000} s…`);
    setTimeout(() => { if (talk.wanted) connectVoice(); }, delay);
  };
}

function setupTalk() {
  $('#talk-connect').addEventListener('click', connectVoice);
  $('#talk-hangup').addEventListener('click', () => {
    talk.wanted = false; talk.ws?.close(1000); stopMic(); talk.player.flush(); setTalkState('idle', 'Not connected');
  });
  $('#talk-stop').addEventListener('click', () => { talk.player.flush(); talk.ws?.send(JSON.stringify({ type: 'interrupt' })); });
  const ptt = $('#talk-ptt');
  const down = () => { if (ptt.disabled) return; talk.player.flush(); talk.ws?.send(JSON.stringify({ type: 'interrupt' })); talk.sending = true; ptt.setAttribute('aria-pressed', 'true'); };
  const up = () => { if (!talk.sending || talkMode() !== 'ptt') return; talk.sending = false; ptt.setAttribute('aria-pressed', 'false'); talk.ws?.send(JSON.stringify({ type: 'audio.commit' })); };
  ptt.addEventListener('pointerdown', down);
  ptt.addEventListener('pointerup', up);
  ptt.addEventListener('pointerleave', up);
  document.addEventListener('keydown', (e) => { if (e.code === 'Space' && !e.repeat && talkMode() === 'ptt' && talk.ws && document.activeElement?.tagName !== 'TEXTAREA') { e.preventDefault(); down(); } });
  document.addEventListener('keyup', (e) => { if (e.code === 'Space' && talkMode() === 'ptt') { e.preventDefault(); up(); } });
}

// ---------------------------------------------------------------------------------------------
// Transcribe panel
function setupTranscribe() {
  $('#tr-go').addEventListener('click', async () => {
    const file = $('#tr-file').files[0];
    if (!file) { $('#tr-state').textContent = 'Choose a file first.'; return; }
    $('#tr-state').textContent = 'Transcribing…';
    const form = new FormData();
    form.append('audio', file);
    const res = await fetch('/voice/transcribe', { method: 'POST', body: form, headers: authHeaders });
    const body = await res.json();
    if (!res.ok) { $('#tr-state').textContent = `Error: ${body.error?.message}`; return; }
    $('#tr-state').textContent = `Done: ${body.duration.toFixed(1)} s of audio.`;
    $('#tr-text').textContent = body.text;
    $('#tr-segments tbody').replaceChildren(...body.segments.map((s) => {
      const tr = document.createElement('tr');
      for (const v of [s.start.toFixed(2), s.end.toFixed(2), s.text]) { const td = document.createElement('td'); td.textContent = v; tr.append(td); }
      return tr;
    }));
  });
}

setupTabs();
setupRead();
setupTalk();
setupTranscribe();
loadLanguages();
refreshStatus();
setInterval(refreshStatus, 5000);
