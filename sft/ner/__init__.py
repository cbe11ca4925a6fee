"""GPT-NER: named-entity recognition as generation with `@@entity##` markers.

readers -> Sentence; entity_types -> what each type means; prompts -> GPT-NER prompts and
`mark`; parse -> generated text back to word spans; score -> micro P/R/F1 on exact spans;
retrieval -> demonstrations (random, sentence kNN, entity kNN); backends -> local HF model or an
OpenAI-compatible server; pipeline -> all of it end to end; sft_data -> training conversations;
cli -> the `sft-ner` command.
"""
