#!/usr/bin/env python3
"""Small tokenizer.json variants (from codi-nano's: Llama 3's structure) that each exercise one rule
of Hugging Face tokenizers: merge ranks, ByteLevel add_prefix_space, added tokens (normalized or
not, single_word, lstrip/rstrip, overlapping, special inside special, spelling a vocabulary token,
decoded through the byte map). Writes <case>.json and
<case>.texts.json into OUT_DIR; hf_reference.js then runs Hugging Face tokenizers on them.

    python3 tools/hf_cases/make_cases.py build/hf_cases
    npm install --prefix build/hf_npm tokenizers@0.23.2
    node tools/hf_cases/hf_reference.js build/hf_cases build/hf_npm > tests/data/hf_tokenizer_cases.jsonl
"""
import copy
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "build/hf_cases"
os.makedirs(out, exist_ok=True)

# GPT-2's byte-to-unicode map: how byte-level tokens are spelled in tokenizer.json
bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
cs = bs[:]
for b in range(256):
    if b not in bs:
        bs.append(b)
        cs.append(256 + len(cs) - 188)
B2U = {b: chr(c) for b, c in zip(bs, cs)}


def bl(s):
    return "".join(B2U[b] for b in s.encode())


nano = json.load(open(os.path.join(os.path.dirname(__file__), "../../models/codi-nano/tokenizer.json")))


def tok(extra_vocab=(), merges=(), added=(), aps=False):
    d = copy.deepcopy(nano)
    vocab = {B2U[b]: b for b in range(256)}
    for v in extra_vocab:
        vocab.setdefault(bl(v), len(vocab))
    d["model"]["vocab"] = vocab
    d["model"]["merges"] = [bl(a) + " " + bl(b) for a, b in merges]
    d["model"]["ignore_merges"] = False
    flags = dict(single_word=False, lstrip=False, rstrip=False, normalized=False, special=False)
    d["added_tokens"] = []
    next_id = len(vocab)
    for a in added:                  # ids as HF assigns them: a vocabulary token's, else the next free one
        if a["content"] in vocab:
            d["added_tokens"].append(dict(flags, **a, id=vocab[a["content"]]))
        else:
            d["added_tokens"].append(dict(flags, **a, id=next_id))
            next_id += 1
    d["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = aps
    d["post_processor"] = None
    return d


cases = {
    "dup_merge": (tok(["ab", "bc"], [("b", "c"), ("a", "b"), ("b", "c")]), ["abc", "xabcx"]),
    "add_prefix_space": (tok(["ab"], [("a", "b")], aps=True), ["ab.ab", "ab ab", "x's", "<x>ab"]),
    "add_prefix_space_added": (tok(["ab"], [("a", "b")], aps=True, added=[{"content": "<x>", "special": True}]), ["ab<x>ab", "<x> ab"]),
    "normalized_second": (tok(added=[{"content": "ab", "normalized": True}, {"content": "bc"}]), ["abc", "xabcx"]),
    "single_word": (tok(added=[{"content": "ab", "single_word": True}, {"content": "b"}]), ["xab", "ab", "x ab y", "xab b", "_ab"]),
    "single_word_longer": (tok(added=[{"content": "abc", "single_word": True}, {"content": "ab"}]), ["abcd", "abc", "abc d"]),
    "single_word_inner": (tok(added=[{"content": "abc", "single_word": True}, {"content": "bc"}]), ["xabc", "abc", "xabc bc"]),
    "special_around_plain": (tok(added=[{"content": "<|xy|>", "special": True}, {"content": "xy"}]), ["<|xy|>", "a<|xy|>b xy"]),
    "strip": (tok(added=[{"content": "<x>", "lstrip": True, "rstrip": True}, {"content": "<y>", "lstrip": True}]),
              ["a  <x>  b", "<x> <x> c", "<x>  <y>", "a\u3000<x>\u00a0b", "\n<y>"]),
    "overlapping_added": (tok(added=[{"content": "abcd"}, {"content": "bc"}, {"content": "abc"}]), ["abcd", "abc", "xbcd", "ab"]),
    "added_in_vocab": (tok(["ab"], [("a", "b")], added=[{"content": "ab"}]), ["ab", "xaby"]),
    "added_byte_alphabet": (tok(added=[{"content": "\u00f1"}, {"content": "\u0120x"}, {"content": "\u00e9 x"}]), ["\u00f1", "a\u0120xb", "\u00e9 x"]),
    # the pre-tokenizer regex and BPE rules, each with merges that make a wrong reading change the ids:
    # equal-rank pairs merge leftmost first ("aaa" -> aa a, not a aa)
    "bpe_tie_leftmost": (tok(["aa"], [("a", "a")]), ["aaa", "aaaaa", " aaa", "baaab"]),
    # digits in runs of at most 3 (\p{N}{1,3}): "12345" -> 123 45
    "digit_runs": (tok(["12", "123", "34", "45"], [("1", "2"), ("12", "3"), ("4", "5"), ("3", "4")]), ["12345", "1234567", "x 12345", "123 45"]),
    # \s+(?!\S): a run of spaces before a word leaves its last space to the word ("a   b" -> a, "  ", " b")
    "space_lookahead": (tok([" b", "  "], [(" ", "b"), (" ", " ")]), ["a   b", "a  \n b", "x    ", "a \t b"]),
    # contractions are case-insensitive (?i:'s|'t|...): "'STOP" -> 'S TOP, not one piece
    "contraction_case": (tok(["ST", "LL"], [("S", "T"), ("L", "L")]), ["'STOP", "DON'T", "WE'LLS", "I'M", "it's", "'Sa"]),
}
for name, (d, texts) in cases.items():
    json.dump(d, open(os.path.join(out, name + ".json"), "w"), ensure_ascii=False)
    json.dump(texts, open(os.path.join(out, name + ".texts.json"), "w"), ensure_ascii=False)
print(" ".join(cases))
