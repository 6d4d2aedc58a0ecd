"""The Hugging Face Hub: publishing a model, its tokenizer and its index in one commit and loading them back
(`publish`), the model card (`model_card`, rendered from `templates/`) and conversion of the original transformers
checkpoints (`convert`).
"""
