// Microphone capture: downmix to mono, resample to 24 kHz with linear interpolation, convert to s16le and
// post 20 ms frames (480 samples) with the block's RMS level for the meter.
class Capture24k extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 24000;
    this.pos = 0;          // fractional read position into `this.prev + block`
    this.prev = 0;         // last sample of the previous block, for interpolation across blocks
    this.out = new Int16Array(480);
    this.n = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const ch0 = input[0];
    const len = ch0.length;
    const mono = new Float32Array(len);
    for (let c = 0; c < input.length; c++) for (let i = 0; i < len; i++) mono[i] += input[c][i] / input.length;
    let sum = 0;
    for (let i = 0; i < len; i++) sum += mono[i] * mono[i];
    // Position 0 is the previous block's last sample; positions 1..len are this block.
    while (this.pos <= len - 1) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i === 0 ? this.prev : mono[i - 1];
      const b = mono[i];
      const s = Math.max(-1, Math.min(1, a + (b - a) * frac));
      this.out[this.n++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.n === this.out.length) {
        this.port.postMessage({ pcm: this.out.buffer.slice(0) });
        this.n = 0;
      }
      this.pos += this.ratio;
    }
    this.pos -= len;
    this.prev = mono[len - 1];
    this.port.postMessage({ level: Math.sqrt(sum / len) });
    return true;
  }
}
registerProcessor('capture-24k', Capture24k);
