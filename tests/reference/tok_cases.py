"""Deterministic tokenizer test inputs: a fixed list plus a seeded generator.

Each case is (name, bytes).  Names are unique.
"""

from __future__ import annotations

import random
from typing import List, Tuple


def _u(s: str) -> bytes:
    return s.encode("utf-8")


FIXED: List[Tuple[str, bytes]] = [
    # --- trivial -------------------------------------------------------
    ("empty", b""),
    ("single_a", b"a"),
    ("single_space", b" "),
    ("single_newline", b"\n"),
    ("single_tab", b"\t"),
    ("single_digit", b"7"),
    ("single_bang", b"!"),
    ("single_nul", b"\x00"),
    ("single_del", b"\x7f"),
    ("single_bell", b"\x07"),
    ("single_cr", b"\r"),
    ("single_e_acute", _u("\u00e9")),
    ("single_cjk", _u("\u4e2d")),
    ("single_emoji", _u("\U0001F600")),
    # --- English prose --------------------------------------------------
    ("prose_hello", b"Hello world"),
    ("prose_hello_bang", b"Hello, world!"),
    ("prose_fox", b"The quick brown fox jumps over the lazy dog."),
    ("prose_paragraph", b"It was the best of times, it was the worst of times, it was the age of "
                        b"wisdom, it was the age of foolishness, it was the epoch of belief."),
    ("prose_caps", b"THIS IS ALL CAPS AND SHOUTING"),
    ("prose_mixedcase", b"camelCaseWord PascalCase snake_case kebab-case SCREAMING_SNAKE"),
    ("prose_question", b"What is the capital of France?"),
    ("prose_multi_sentence", b"First sentence. Second sentence! Third? Fourth..."),
    ("prose_quotes", b"He said \"hello\" and she said 'goodbye'."),
    ("prose_parens", b"A (parenthetical) remark [with brackets] {and braces}."),
    ("prose_hyphenated", b"state-of-the-art well-known mother-in-law"),
    ("prose_abbrev", b"e.g. i.e. etc. Mr. Mrs. Dr. U.S.A."),
    ("prose_long_word", b"Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism"),
    ("prose_wikitext", b" = Valkyria Chronicles III = \n \n Senj\xc5\x8d no Valkyria 3 : Unrecorded Chronicles"),
    # --- contractions ----------------------------------------------------
    ("contr_s", b"it's John's"),
    ("contr_t", b"don't can't won't"),
    ("contr_re", b"we're they're you're"),
    ("contr_ve", b"I've we've could've"),
    ("contr_m", b"I'm"),
    ("contr_ll", b"I'll you'll she'll"),
    ("contr_d", b"I'd he'd we'd"),
    ("contr_upper_S", b"IT'S JOHN'S"),
    ("contr_upper_T_RE", b"DON'T WE'RE I'VE I'M I'LL I'D"),
    ("contr_curly", _u("it\u2019s don\u2019t we\u2019re")),
    ("contr_bare", b"'s 't 're 've 'm 'll 'd"),
    ("contr_quote_only", b"''' ' '' '"),
    ("contr_mixed_case", b"It'S dOn'T"),
    # --- code ------------------------------------------------------------
    ("code_py_def", b"def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"),
    ("code_py_class", b"class Foo(Base):\n    \"\"\"Docstring.\"\"\"\n\n    def __init__(self, x=None, **kw):\n        self._x = x or {}\n"),
    ("code_py_comprehension", b"squares = [x**2 for x in range(10) if x % 2 == 0]"),
    ("code_py_fstring", b"print(f\"{name!r:>10} = {value:.3f}\")"),
    ("code_c_main", b"#include <stdio.h>\n\nint main(int argc, char **argv) {\n\tprintf(\"%d\\n\", argc);\n\treturn 0;\n}\n"),
    ("code_c_ptr", b"static inline uint32_t *p = (uint32_t *)&buf[i << 2]; p->next->prev = NULL;"),
    ("code_c_ops", b"a += b; c -= d; e *= f; g /= h; i %= j; k <<= 1; l >>= 2; m &= n; o |= p; q ^= r; s != t && u || !v;"),
    ("code_json", b"{\"name\": \"sqserve\", \"version\": 1, \"tags\": [\"llm\", \"c\"], \"nested\": {\"a\": null, \"b\": true, \"c\": -1.5e-3}}"),
    ("code_json_pretty", b"{\n  \"key\": [\n    1,\n    2\n  ]\n}"),
    ("code_shell", b"#!/bin/sh\nset -eu\nfor f in *.txt; do\n  grep -n \"foo\" \"$f\" | sort -u > /tmp/out.$$ 2>&1 || true\ndone\n"),
    ("code_shell_pipe", b"curl -sSL http://127.0.0.1:8080/v1/models | jq '.data[0].id' && echo $?"),
    ("code_html", b"<div class=\"main\"><p>Hello &amp; welcome</p><br/></div>"),
    ("code_sql", b"SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;"),
    ("code_rust", b"fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![0; 16]; Ok(()) }"),
    ("code_regex", b"^([a-zA-Z0-9._%+-]+)@([a-zA-Z0-9.-]+)\\.([a-zA-Z]{2,})$"),
    ("code_indent_4", b"        deeply_indented = True"),
    ("code_indent_tabs", b"\t\t\tif (x) {\n\t\t\t\ty();\n\t\t\t}"),
    ("code_yaml", b"services:\n  web:\n    image: \"nginx:1.25\"\n    ports:\n      - \"80:80\"\n"),
    # --- numbers -----------------------------------------------------------
    ("num_small", b"0 1 2 3 4 5 6 7 8 9"),
    ("num_10", b"10"),
    ("num_123", b"123"),
    ("num_1234567890", b"1234567890"),
    ("num_long_run", b"31415926535897932384626433832795028841971693993751058209749445923078164062862"),
    ("num_with_commas", b"1,000,000 and 12,345.67"),
    ("num_decimal", b"3.14159 2.71828 0.5 .5 5."),
    ("num_negative", b"-42 -0.001 +7"),
    ("num_sci", b"6.022e23 1.6E-19 1e+10"),
    ("num_hex", b"0xDEADBEEF 0x7f 0b1010 0o755"),
    ("num_date_iso", b"2024-01-15"),
    ("num_date_us", b"12/31/1999 and 01/01/2000"),
    ("num_datetime", b"2024-02-29T23:59:59.999Z"),
    ("num_time", b"at 10:30am or 22:45:00"),
    ("num_phone", b"+1 (555) 123-4567"),
    ("num_version", b"v1.2.3-rc.4+build.567"),
    ("num_money", b"$19.99, \xe2\x82\xac5, \xc2\xa3100, \xc2\xa51000"),
    ("num_percent", b"99.9% uptime, 50% off"),
    ("num_ordinals", b"1st 2nd 3rd 4th 21st 100th"),
    ("num_letters_digits", b"abc123def456 H2O CO2 x86_64 mp3"),
    ("num_year_prose", b"In 1969, the first humans landed on the Moon."),
    ("num_fullwidth", _u("\uff11\uff12\uff13")),
    ("num_arabic_indic", _u("\u0661\u0662\u0663 \u06f4\u06f5")),
    ("num_devanagari_digits", _u("\u0967\u0968\u0969")),
    ("num_superscript", _u("x\u00b2 + y\u00b3 = z\u2074")),
    ("num_fraction", _u("\u00bd \u00bc 1\u20442")),
    # --- whitespace --------------------------------------------------------
    ("ws_two_spaces", b"  "),
    ("ws_three_spaces", b"   "),
    ("ws_many_spaces", b" " * 17),
    ("ws_space_run_between", b"a     b"),
    ("ws_leading_space", b" hello"),
    ("ws_leading_spaces", b"   hello"),
    ("ws_trailing_space", b"hello "),
    ("ws_trailing_spaces", b"hello   "),
    ("ws_both_sides", b"  hello world  "),
    ("ws_tabs", b"\t\t\t"),
    ("ws_tab_between", b"a\tb\t\tc"),
    ("ws_mixed_tab_space", b" \t \t  \t"),
    ("ws_mixed_in_text", b"x \t y\t \tz"),
    ("ws_space_before_newline", b"line   \nnext"),
    ("ws_spaces_after_newline", b"line\n   next"),
    ("nl_single_text", b"a\nb"),
    ("nl_double", b"\n\n"),
    ("nl_triple", b"\n\n\n"),
    ("nl_many", b"\n" * 9),
    ("nl_crlf", b"\r\n"),
    ("nl_crlf_text", b"line1\r\nline2\r\n"),
    ("nl_crlf_run", b"\r\n\r\n\r\n"),
    ("nl_cr_only", b"a\rb\r\rc"),
    ("nl_paragraphs", b"Para one.\n\nPara two.\n\n\nPara three."),
    ("nl_trailing", b"end\n"),
    ("nl_leading", b"\nstart"),
    ("nl_space_mix", b" \n \n\t\n  "),
    ("nl_vt_ff", b"a\x0bb\x0cc"),
    # --- unicode whitespace --------------------------------------------------
    ("uws_nbsp", _u("a\u00a0b")),
    ("uws_nbsp_run", _u("\u00a0\u00a0\u00a0x")),
    ("uws_ideographic", _u("\u3000\u65e5\u672c\u3000")),
    ("uws_em_space", _u("a\u2003b")),
    ("uws_nel", _u("a\u0085b")),
    ("uws_line_sep", _u("a\u2028b\u2029c")),
    ("uws_thin_hair", _u("1\u2009000\u200a000")),
    ("uws_zwsp", _u("zero\u200bwidth")),
    ("uws_bom", _u("\ufeffBOM at start")),
    ("uws_narrow_nbsp", _u("10\u202fkm")),
    ("uws_mixed", _u(" \u00a0\u3000\u2003\t\n")),
    # --- CJK ---------------------------------------------------------------
    ("cjk_zh", _u("\u6211\u7231\u5317\u4eac\u5929\u5b89\u95e8\u3002")),
    ("cjk_zh_mixed", _u("\u8fd9\u662fGPT\u6a21\u578b\uff0c\u7248\u672c2.0\u3002")),
    ("cjk_zh_trad", _u("\u7e41\u9ad4\u4e2d\u6587\u6e2c\u8a66")),
    ("cjk_ja", _u("\u3053\u3093\u306b\u3061\u306f\u4e16\u754c\u3001\u30ab\u30bf\u30ab\u30ca\u3082\u3002")),
    ("cjk_ja_halfwidth", _u("\uff76\uff80\uff76\uff85 \uff8a\uff9e\uff9d")),
    ("cjk_ko", _u("\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4")),
    ("cjk_ko_jamo", _u("\u1100\u1161\u11a8")),
    ("cjk_punct", _u("\u300c\u5f15\u7528\u300d\u3010\u62ec\u53f7\u3011\uff01\uff1f")),
    ("cjk_ext_b", _u("\U00020000\U0002A6D6")),
    # --- emoji ---------------------------------------------------------------
    ("emoji_simple", _u("I \u2764 pizza \U0001F355")),
    ("emoji_run", _u("\U0001F600\U0001F601\U0001F602\U0001F923")),
    ("emoji_zwj_family", _u("\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466")),
    ("emoji_zwj_tech", _u("\U0001F469\u200D\U0001F4BB")),
    ("emoji_skin_tone", _u("\U0001F44D\U0001F3FD")),
    ("emoji_flags", _u("\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5\U0001F1E9\U0001F1EA")),
    ("emoji_flag_subdivision", _u("\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F")),
    ("emoji_keycap", _u("1\uFE0F\u20E3 #\uFE0F\u20E3")),
    ("emoji_vs16", _u("\u2600\uFE0F \u2601")),
    ("emoji_in_text", _u("Great job! \U0001F389\U0001F389 See you soon \U0001F44B")),
    # --- accented Latin / combining marks ------------------------------------
    ("latin_accents_nfc", _u("caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber se\u00f1or")),
    ("latin_accents_nfd", _u("cafe\u0301 nai\u0308ve re\u0301sume\u0301")),
    ("latin_combining_stack", _u("a\u0300\u0301\u0302\u0303\u0304")),
    ("latin_zalgo", _u("Z\u0351\u036b\u0343a\u0310\u0364l\u0346g\u0300o\u0358")),
    ("latin_german", _u("Stra\u00dfe \u00c4rger \u00d6l \u1e9e")),
    ("latin_polish", _u("Za\u017c\u00f3\u0142\u0107 g\u0119\u015bl\u0105 ja\u017a\u0144")),
    ("latin_vietnamese", _u("Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u")),
    ("latin_ligatures", _u("\ufb01\ufb02 \u0153 \u00e6 \u0133")),
    ("latin_french", _u("L'\u00e9t\u00e9 o\u00f9 l'on s'aimait \u00e0 P\u00e2ques")),
    # --- other scripts -------------------------------------------------------
    ("cyrillic", _u("\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u041a\u0430\u043a \u0434\u0435\u043b\u0430?")),
    ("cyrillic_caps", _u("\u041c\u041e\u0421\u041a\u0412\u0410 2024")),
    ("greek", _u("\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5")),
    ("greek_math", _u("\u03b1 + \u03b2 = \u03b3, \u2200x \u2203y: x \u2264 y \u2192 \u03c0r\u00b2")),
    ("arabic", _u("\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645")),
    ("arabic_diacritics", _u("\u0628\u0650\u0633\u0652\u0645\u0650 \u0627\u0644\u0644\u0651\u064e\u0647\u0650")),
    ("hebrew", _u("\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd")),
    ("hebrew_mixed_ltr", _u("\u05e9\u05dc\u05d5\u05dd hello \u05e2\u05d5\u05dc\u05dd 123")),
    ("devanagari", _u("\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e")),
    ("thai", _u("\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01")),
    ("armenian_georgian", _u("\u0532\u0561\u0580\u0565\u0582 \u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0")),
    ("tamil_bengali", _u("\u0bb5\u0ba3\u0b95\u0bcd\u0b95\u0bae\u0bcd \u09a8\u09ae\u09b8\u09cd\u0995\u09be\u09b0")),
    ("ethiopic", _u("\u1230\u120b\u121d")),
    ("math_symbols", _u("\u222b\u2080\u00b9 f(x) dx \u2248 \u2211 \u221a2 \u221e \u2260 \u00b1")),
    ("box_drawing", _u("\u250c\u2500\u2510\n\u2502x\u2502\n\u2514\u2500\u2518")),
    ("private_use", _u("\ue000\uf8ff")),
    ("noncharacters", _u("\ufffe\uffff\U0010FFFF")),
    ("replacement_char", _u("\ufffd")),
    ("control_c1", _u("\u0080\u0081\u009f")),
    # lead bytes F1/F2 (planes 4..11) and some ASCII controls have no byte
    # token in SmolLM2's vocab: BPE drops those bytes
    ("dropped_plane4", _u("a\U00040000b")),
    ("dropped_plane10_in_text", _u("x \U000A1234 y \U000B0000")),
    ("dropped_ctrl_in_text", b"ab\x04cd\x06ef\x13\x14gh\x16\x1d"),
    # --- punctuation -------------------------------------------------------
    ("punct_run", b"!!!???...,,,;;;:::"),
    ("punct_all_ascii", b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    ("punct_ellipsis", _u("Wait\u2026 what?!")),
    ("punct_dashes", _u("em\u2014dash en\u2013dash -- ---")),
    ("punct_arrows", b"-> => <- <= >= != == === !== ::"),
    ("punct_repeated_eq", b"================"),
    ("punct_repeated_dash", b"----------------"),
    ("punct_repeated_star", b"****************"),
    ("punct_curly_quotes", _u("\u201cquoted\u201d \u2018single\u2019 \u00abguillemets\u00bb")),
    ("punct_space_separated", b"! ? . , ; :"),
    # --- URLs / paths / emails ----------------------------------------------
    ("url_https", b"https://www.example.com/path/to/page?query=1&b=two#frag"),
    ("url_in_text", b"See https://github.com/user/repo/blob/main/README.md for details."),
    ("url_ipv4_port", b"http://127.0.0.1:8080/v1/chat/completions"),
    ("url_percent", b"https://example.org/search?q=caf%C3%A9+au+lait"),
    ("email", b"Contact: first.last+tag@sub.example.co.uk"),
    ("path_unix", b"/usr/local/lib/python3.11/site-packages/numpy/__init__.py"),
    ("path_windows", b"C:\\Users\\Name\\Documents\\file (1).txt"),
    # --- markdown ------------------------------------------------------------
    ("md_heading", b"# Title\n## Subtitle\n### Section 1.2"),
    ("md_list", b"- item one\n- item two\n  * nested\n1. first\n2. second"),
    ("md_emphasis", b"**bold** *italic* __under__ ~~strike~~ `code`"),
    ("md_link", b"[link text](https://example.com \"title\") ![img](a.png)"),
    ("md_code_fence", b"```python\nprint('hi')\n```"),
    ("md_table", b"| a | b |\n|---|---|\n| 1 | 2 |"),
    ("md_blockquote", b"> quoted line\n> > nested quote"),
    # --- special tokens in text --------------------------------------------
    ("special_chat_turn", b"<|im_start|>user\nhi<|im_end|>"),
    ("special_full_chat", b"<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"),
    ("special_endoftext", b"<|endoftext|>"),
    ("special_endoftext_in_text", b"end of doc<|endoftext|>start of next"),
    ("special_adjacent", b"<|im_start|><|im_end|><|endoftext|>"),
    ("special_with_spaces", b" <|im_start|> user <|im_end|> "),
    ("special_repo_tokens", b"<repo_name>sqserve<file_sep>main.c<filename>x.py<gh_stars>100"),
    ("special_jupyter", b"<jupyter_start><jupyter_code>print(1)<jupyter_output>1<empty_output>"),
    ("special_issue", b"<issue_start>Bug<issue_comment>fixed<issue_closed>"),
    ("special_doubled", b"<|im_start|><|im_start|>"),
    ("special_lookalike_partial", b"<|im_sta"),
    ("special_lookalike_no_close", b"<|im_start|"),
    ("special_lookalike_no_open", b"im_start|>"),
    ("special_lookalike_case", b"<|IM_START|>"),
    ("special_lookalike_space", b"<| im_start |>"),
    ("special_lookalike_extra", b"<|im_start||>"),
    ("special_lookalike_nested", b"<<|im_end|>>"),
    ("special_lookalike_angle", b"<im_start> <|> <||> <|unknown|>"),
    ("special_partial_then_full", b"<|im_st<|im_start|>art|>"),
    ("special_newlines_around", b"\n\n<|im_end|>\n\n"),
    # --- misc tricky -------------------------------------------------------
    ("mixed_scripts", _u("English \u4e2d\u6587 \u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \U0001F30D 123")),
    ("letters_then_punct", b"word.word,word;word:word!word?"),
    ("apostrophe_in_code", b"x = 'it''s'"),
    ("underscore_runs", b"__init__ ___ _a_b_"),
    ("all_printable_ascii", bytes(range(0x20, 0x7f))),
    ("all_ascii_controls", bytes(range(0x00, 0x20))),
    ("latin1_range", _u("".join(chr(c) for c in range(0xa0, 0x100)))),
    ("long_repetition", b"ab" * 200),
    ("long_prose", (b"The reference tokenizer must agree with the engine on long inputs too. " * 12)),
]


INVALID_UTF8: List[Tuple[str, bytes]] = [
    ("bad_lone_continuation", b"\x80"),
    ("bad_lone_continuation_run", b"\x80\xbf\x80"),
    ("bad_continuation_in_text", b"abc\x80def"),
    ("bad_truncated_2byte", b"\xc3"),
    ("bad_truncated_2byte_in_text", b"caf\xc3 ok"),
    ("bad_truncated_3byte", b"\xe2\x82"),
    ("bad_truncated_3byte_in_text", b"x\xe2\x82y"),
    ("bad_truncated_4byte", b"\xf0\x9f\x98"),
    ("bad_truncated_4byte_at_end", b"smile \xf0\x9f\x98"),
    ("bad_overlong_slash", b"\xc0\xaf"),
    ("bad_overlong_nul", b"\xc0\x80"),
    ("bad_overlong_3byte", b"\xe0\x80\xaf"),
    ("bad_overlong_4byte", b"\xf0\x80\x80\xaf"),
    ("bad_surrogate_high", b"\xed\xa0\x80"),
    ("bad_surrogate_low", b"\xed\xbf\xbf"),
    ("bad_surrogate_pair", b"\xed\xa0\xbd\xed\xb8\x80"),
    ("bad_f5", b"\xf5\x80\x80\x80"),
    ("bad_ff", b"\xff"),
    ("bad_fe_ff", b"\xfe\xff"),
    ("bad_bytes_f5_to_ff", bytes(range(0xf5, 0x100))),
    ("bad_above_max_codepoint", b"\xf4\x90\x80\x80"),
    ("bad_c1_start", b"\xc1\xbf"),
    ("bad_mid_valid_text", _u("Hello \u4e16") + b"\xe4\xb8" + _u(" world \U0001F600")),
    ("bad_mixed_many", b"ok\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc end"),
    ("bad_start_then_ascii", b"\xc3(abc"),
    ("bad_latin1_text", b"caf\xe9 na\xefve"),
    ("bad_cesu8_emoji", b"\xed\xa0\xbd\xed\xb8\x80 emoji"),
    ("bad_special_token_adjacent", b"\xff<|im_start|>\x80"),
]


def _random_cases(seed: int = 20240601, n: int = 40) -> List[Tuple[str, bytes]]:
    """Seeded mixtures drawn from a pool of fragments (valid UTF-8 only)."""
    rng = random.Random(seed)
    pool = [
        "the", " the", "The", " quick", " brown", "fox", " ", "  ", "   ", "\n", "\n\n", "\t",
        "\r\n", "0", "7", "42", "2024", "3.14", "-", "_", ".", ",", "!", "?", "'s", "'t",
        "'re", "'ll", "\u2019s", "(", ")", "{", "}", "[", "]", "\"", "'", "#", "@", "$",
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", "|>", "<", ">",
        "\u00e9", "e\u0301", "\u00fc", "\u00df", "\u4e2d", "\u6587", "\u3053\u3093",
        "\uc548\ub155", "\u041f\u0440\u0438", "\u03b1\u03b2", "\u0645\u0631", "\u05e9\u05dc",
        "\u0928\u092e", "\u0e2a\u0e27", "\U0001F600", "\U0001F468\u200D\U0001F469",
        "\U0001F1FA\U0001F1F8", "\u00a0", "\u3000", "\u2003", "\u0085", "\u200b",
        "def", " return", "int", " main", "()", "{}", "->", "==", "://", "www", ".com",
        "ing", "tion", "un", "re", "HELLO", "World", "x", "y", "z", "a1", "b2",
    ]
    out = []
    for i in range(n):
        k = rng.randint(1, 24)
        s = "".join(rng.choice(pool) for _ in range(k))
        out.append((f"rand_mix_{i:02d}", _u(s)))
    # random printable-ASCII strings
    alphabet = [chr(c) for c in range(0x20, 0x7f)] + ["\n", "\t"]
    for i in range(12):
        k = rng.randint(1, 60)
        out.append((f"rand_ascii_{i:02d}", _u("".join(rng.choice(alphabet) for _ in range(k)))))
    # random code points from assorted blocks (no surrogates)
    ranges = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x6ff),
              (0x900, 0x97f), (0xe00, 0xe7f), (0x3040, 0x30ff), (0x4e00, 0x9fff),
              (0xac00, 0xd7a3), (0x1f300, 0x1f64f)]
    for i in range(12):
        k = rng.randint(1, 20)
        cs = []
        for _ in range(k):
            lo, hi = rng.choice(ranges)
            cs.append(chr(rng.randint(lo, hi)))
        out.append((f"rand_unicode_{i:02d}", _u("".join(cs))))
    # random raw bytes (mostly invalid UTF-8)
    for i in range(8):
        k = rng.randint(1, 16)
        out.append((f"rand_bytes_{i:02d}", bytes(rng.randrange(256) for _ in range(k))))
    return out


def all_cases() -> List[Tuple[str, bytes]]:
    cases = FIXED + INVALID_UTF8 + _random_cases()
    names = [n for n, _ in cases]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise AssertionError(f"duplicate case names: {sorted(dup)}")
    return cases
