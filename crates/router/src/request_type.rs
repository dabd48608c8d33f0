//! The request classifier of adaptive groups: a deterministic, rule-based sort of a request
//! into the seed's taxonomy. It reads at most the first [`MAX_CHARS`] characters of the last
//! user message and of the system prompt, word by word through a fixed stack buffer: nothing is
//! allocated per request.

/// What kind of work a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestType {
    /// Write new code.
    CodeGeneration,
    /// Explain, review or debug given code.
    CodeUnderstanding,
    /// Architecture and system design.
    TechnicalDesign,
    /// Reasoning, maths, comparisons.
    AnalyticalReasoning,
    /// Prose: drafts, rewrites, summaries.
    Writing,
    /// A short question with a factual answer.
    FactualLookup,
    /// Anything else.
    General,
}

impl RequestType {
    /// Every type, in a stable order (an index into per-type tables).
    pub const ALL: [RequestType; 7] = [
        Self::CodeGeneration,
        Self::CodeUnderstanding,
        Self::TechnicalDesign,
        Self::AnalyticalReasoning,
        Self::Writing,
        Self::FactualLookup,
        Self::General,
    ];

    /// The snake_case name (metrics, `/adaptive`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CodeGeneration => "code_generation",
            Self::CodeUnderstanding => "code_understanding",
            Self::TechnicalDesign => "technical_design",
            Self::AnalyticalReasoning => "analytical_reasoning",
            Self::Writing => "writing",
            Self::FactualLookup => "factual_lookup",
            Self::General => "general",
        }
    }

    /// The type named `text` (its [`Self::as_str`]).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// Position in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Characters read from the last user message, and from the system prompt.
pub const MAX_CHARS: usize = 2_000;
/// Longest word compared; longer words are not keywords.
const WORD: usize = 24;

/// Signals a text gives, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Signals {
    code_verbs: u16,
    code_nouns: u16,
    languages: u16,
    understand: u16,
    design: u16,
    analysis: u16,
    writing: u16,
    question: u16,
    words: u16,
    /// Code-shaped text: fences, `fn`/`def`, braces with semicolons.
    code_shape: u16,
}

fn word_signals(word: &[u8], s: &mut Signals) {
    let bump = |n: &mut u16| *n = n.saturating_add(1);
    match word {
        b"write" | b"implement" | b"generate" | b"create" | b"build" | b"code" | b"program" | b"scaffold" => {
            bump(&mut s.code_verbs)
        }
        _ => {}
    }
    match word {
        b"function" | b"functions" | b"script" | b"class" | b"method" | b"api" | b"endpoint" | b"regex" | b"query"
        | b"unit" | b"test" | b"tests" | b"cli" | b"parser" | b"algorithm" | b"struct" | b"module" | b"library"
        | b"snippet" => bump(&mut s.code_nouns),
        b"python" | b"rust" | b"javascript" | b"typescript" | b"java" | b"golang" | b"sql" | b"bash" | b"c++"
        | b"kotlin" | b"swift" | b"ruby" | b"php" | b"html" | b"css" | b"react" | b"go" => bump(&mut s.languages),
        b"explain" | b"debug" | b"bug" | b"error" | b"exception" | b"traceback" | b"stacktrace" | b"fix"
        | b"review" | b"refactor" | b"crash" | b"crashes" | b"fails" | b"failing" | b"segfault" | b"panic"
        | b"understand" => bump(&mut s.understand),
        b"architecture" | b"design" | b"scalable" | b"scalability" | b"microservice" | b"microservices"
        | b"distributed" | b"infrastructure" | b"kubernetes" | b"schema" | b"throughput" | b"latency" | b"caching"
        | b"sharding" | b"replication" | b"tradeoff" | b"tradeoffs" | b"system" | b"systems" => bump(&mut s.design),
        b"analyze" | b"analyse" | b"analysis" | b"compare" | b"evaluate" | b"prove" | b"proof" | b"calculate"
        | b"solve" | b"probability" | b"estimate" | b"reason" | b"reasoning" | b"derive" | b"pros" | b"cons"
        | b"implications" | b"equation" | b"statistics" | b"why" => bump(&mut s.analysis),
        b"essay" | b"email" | b"letter" | b"story" | b"poem" | b"blog" | b"article" | b"draft" | b"rewrite"
        | b"summarize" | b"summarise" | b"summary" | b"paragraph" | b"tone" | b"proofread" | b"headline"
        | b"tagline" | b"cover" | b"speech" | b"post" => bump(&mut s.writing),
        b"what" | b"who" | b"when" | b"where" | b"which" | b"define" | b"definition" | b"capital" | b"year"
        | b"population" | b"meaning" => bump(&mut s.question),
        b"def" | b"fn" | b"impl" | b"let" | b"const" | b"var" | b"return" | b"import" | b"include" | b"println"
        | b"printf" | b"console" => bump(&mut s.code_shape),
        _ => {}
    }
}

/// Scans up to [`MAX_CHARS`] characters of `text` into `s`.
fn scan(text: &str, s: &mut Signals) {
    let mut buf = [0u8; WORD];
    let mut len = 0usize;
    let mut too_long = false;
    let mut previous = '\0';
    let mut fence = 0u8;
    let flush = |buf: &[u8; WORD], len: &mut usize, too_long: &mut bool, s: &mut Signals| {
        if *len > 0 && !*too_long {
            s.words = s.words.saturating_add(1);
            word_signals(&buf[..*len], s);
        }
        *len = 0;
        *too_long = false;
    };
    for c in text.chars().take(MAX_CHARS) {
        if c == '`' {
            fence += 1;
            if fence == 3 {
                s.code_shape = s.code_shape.saturating_add(2);
                fence = 0;
            }
        } else {
            fence = 0;
        }
        if (c == ';' || c == '{') && (previous == ')' || previous == ' ' || previous == ';') {
            s.code_shape = s.code_shape.saturating_add(1);
        }
        if c.is_alphanumeric() || c == '+' {
            if len < WORD && c.is_ascii() {
                buf[len] = c.to_ascii_lowercase() as u8;
                len += 1;
            } else {
                too_long = true;
            }
        } else {
            flush(&buf, &mut len, &mut too_long, s);
        }
        previous = c;
    }
    flush(&buf, &mut len, &mut too_long, s);
}

/// The type of a request from its system prompt and its last user message.
pub fn classify_request(system: &str, last_user: &str) -> RequestType {
    let mut user = Signals::default();
    scan(last_user, &mut user);
    let mut sys = Signals::default();
    scan(system, &mut sys);
    // The user's words decide; the system prompt only leans (half weight, rounded down).
    let lean = |u: u16, s: u16| u32::from(u) * 2 + u32::from(s);
    let code_present = user.code_shape > 0;
    let mut scores = [0u32; 7];
    scores[RequestType::CodeGeneration.index()] = if user.code_verbs > 0 || sys.code_verbs > 0 {
        lean(user.code_nouns + user.languages, sys.code_nouns + sys.languages) + u32::from(user.code_verbs)
    } else {
        0
    };
    scores[RequestType::CodeUnderstanding.index()] = if code_present || user.understand > 1 {
        lean(user.understand, sys.understand) + u32::from(user.code_shape) + u32::from(user.languages)
    } else {
        lean(user.understand, sys.understand) / 2
    };
    scores[RequestType::TechnicalDesign.index()] = lean(user.design, sys.design);
    scores[RequestType::AnalyticalReasoning.index()] = lean(user.analysis, sys.analysis);
    scores[RequestType::Writing.index()] = lean(user.writing, sys.writing);
    // A short question that asks for a fact.
    scores[RequestType::FactualLookup.index()] =
        if user.words <= 20 && user.question > 0 && !code_present { lean(user.question, 0) + 1 } else { 0 };
    // Highest score wins; ties go to the earlier (more specific) type; nothing: general.
    let mut best = (RequestType::General, 1u32);
    for t in RequestType::ALL {
        let score = scores[t.index()];
        if score > best.1 {
            best = (t, score);
        }
    }
    best.0
}

#[cfg(test)]
mod tests;
