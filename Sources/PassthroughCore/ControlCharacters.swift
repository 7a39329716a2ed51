extension Unicode.Scalar {
    /// Characters that must never reach a log line or a terminal unescaped: the C0 and C1 controls and
    /// DEL, which a terminal may act on, and the bidirectional-text controls (ALM, LRM/RLM, LRE…RLO,
    /// LRI…PDI), which make text print as other text: `vm\u{202E}exe` shows as `vmexe` reversed.
    package var isControlOrBidiControl: Bool {
        switch value {
        case 0x00...0x1f, 0x7f...0x9f: true
        case 0x061c, 0x200e, 0x200f, 0x202a...0x202e, 0x2066...0x2069: true
        default: false
        }
    }
}
