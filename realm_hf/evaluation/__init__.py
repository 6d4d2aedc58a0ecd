"""Evaluating REALM: the open-QA datasets (`qa_data`), the `evaluate` metric (`metrics`, exact match and F1 with
regular-expression answers) and `evaluate_open_qa` (answers, metric and gold-passage recall in one pass).
"""
