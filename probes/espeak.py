"""Text to speech through espeak-ng: the system binary when it is on PATH, else the library
and voice data shipped in the `espeakng-loader` wheel, so that real speech works from
`pip install` alone.

Both backends are a program that reads the text on stdin and writes WAV bytes on stdout
(22,050 Hz mono PCM16, as `espeak-ng --stdout` does), so the caller decodes, resamples and
trims one format. For the wheel that program is this file, run by the same interpreter: it
drives libespeak-ng through ctypes with the calls the CLI makes (synchronous output, the voice
by name, then the rate in words per minute, the same synth flags). A fresh process per render
is deliberate: libespeak-ng carries state from one synthesis to the next (the same text comes
out up to ~10 ms longer or shorter on a second call in one process, even after
espeak_Terminate), while a first call in a new process is reproducible, as the binary is.
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import subprocess
import sys
import wave
from functools import lru_cache

TIMEOUT_S = 60.0
INSTALL_HINT = "pip install espeakng-loader, or apt-get install espeak-ng"

# libespeak-ng's speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_RATE = 1  # espeakRATE
_PITCH = 3  # espeakPITCH
#: what joins a voice and its pitch in one voice string (voice_spec)
PITCH_SEP = ":p"
_POS_CHARACTER = 1
_SYNTH_FLAGS = 0x0000 | 0x0100 | 0x1000  # CHARS_AUTO | PHONEMES | ENDPAUSE, as the CLI passes


class EspeakError(RuntimeError):
    """espeak-ng is missing, or failed on this text or voice."""


def backend() -> str | None:
    """'system' (espeak-ng on PATH), 'wheel' (espeakng-loader) or None: neither is installed."""
    if shutil.which("espeak-ng"):
        return "system"
    return "wheel" if _wheel_paths() else None


def voice_spec(voice: str, pitch: int | None) -> str:
    """`voice` with a pitch (espeak-ng's -p, 0..99; 50 is the voice's own) carried along as
    `VOICE:pN`, so one string names what to render; `voice` unchanged when pitch is None."""
    base, _ = split_voice(voice)
    return base if pitch is None else f"{base}{PITCH_SEP}{int(pitch)}"


def split_voice(spec: str) -> tuple[str, int | None]:
    """(voice, pitch or None) from a `voice_spec` string."""
    base, sep, p = spec.rpartition(PITCH_SEP)
    if sep and base and p.isdigit():
        return base, int(p)
    return spec, None


def wav(text: str, voice: str, wpm: int) -> bytes:
    """`text` spoken by espeak-ng in `voice` (a `voice_spec`: optionally with a pitch) at
    `wpm`, as WAV bytes.

    The text goes in on stdin, never through a shell or argv.
    """
    voice, pitch = split_voice(voice)
    exe = shutil.which("espeak-ng")
    if exe is not None:
        cmd = [exe, "-v", voice, "-s", str(int(wpm)), "--stdout"]
        if pitch is not None:
            cmd[-1:-1] = ["-p", str(pitch)]
    elif _wheel_paths() is not None:
        cmd = [sys.executable, "-P", os.path.abspath(__file__), voice, str(int(wpm)),
               str(-1 if pitch is None else pitch)]
    else:
        raise EspeakError(f"espeak-ng is not installed ({INSTALL_HINT})")
    try:
        done = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EspeakError(f"espeak-ng failed to run: {e}") from None
    if done.returncode != 0 or not done.stdout:
        err = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
        raise EspeakError(f"espeak-ng (voice {voice!r}) failed: {err}")
    return done.stdout


@lru_cache(maxsize=1)
def _wheel_paths() -> tuple[str, str] | None:
    """(libespeak-ng path, espeak-ng-data dir) from the espeakng-loader wheel, or None."""
    try:
        import espeakng_loader

        lib, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except (ImportError, RuntimeError):  # not installed, or its data dir is missing
        return None
    return (lib, data) if os.path.isfile(lib) and os.path.isdir(data) else None


class _Voice(ctypes.Structure):
    """espeak_VOICE: the properties a voice is selected by."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p),
                ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte),
                ("variant", ctypes.c_ubyte), ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int),
                ("spare", ctypes.c_void_p)]


def _library_wav(lib_path: str, data_path: str, text: str, voice: str, wpm: int,
                 pitch: int | None = None) -> bytes:
    """One synthesis in libespeak-ng, as the espeak-ng CLI does it; WAV bytes."""
    lib = ctypes.CDLL(lib_path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT)
    if rate <= 0:
        raise EspeakError(f"libespeak-ng failed to initialise with its data at {data_path}")
    out: list[bytes] = []

    def collect(samples, n: int, _events) -> int:
        if n > 0 and samples:
            out.append(ctypes.string_at(samples, n * 2))
        return 0  # 0: carry on synthesising

    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                     ctypes.c_void_p)
    callback = callback_type(collect)  # referenced until the synthesis is over
    lib.espeak_SetSynthCallback.argtypes = [callback_type]
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:  # then as a language, as the CLI
        wanted = _Voice(languages=voice.encode("utf-8"))
        if lib.espeak_SetVoiceByProperties(ctypes.byref(wanted)) != 0:
            raise EspeakError("no such voice")
    lib.espeak_SetParameter(_RATE, int(wpm), 0)
    if pitch is not None:
        lib.espeak_SetParameter(_PITCH, int(pitch), 0)
    data = text.encode("utf-8") + b"\0"
    err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _SYNTH_FLAGS, None, None)
    lib.espeak_Synchronize()
    if err != 0 or not out:
        raise EspeakError(f"synthesis error {err}, {sum(map(len, out))} bytes of audio")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(out))
    return buf.getvalue()


def _main(argv: list[str]) -> int:
    """The wheel backend's child: `python espeak.py VOICE WPM [PITCH] < text > out.wav`
    (PITCH -1: the voice's own)."""
    paths = _wheel_paths()
    try:
        if paths is None:
            raise EspeakError(f"espeak-ng is not installed ({INSTALL_HINT})")
        text = sys.stdin.buffer.read().decode("utf-8")
        pitch = int(argv[2]) if len(argv) > 2 and int(argv[2]) >= 0 else None
        sys.stdout.buffer.write(_library_wav(*paths, text, argv[0], int(argv[1]), pitch))
    except EspeakError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
