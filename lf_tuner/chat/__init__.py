"""LLaMA-Factory's chat templates, reproduced as data so lengths count the tokens LLaMA-Factory trains on."""

from lf_tuner.chat.template import ChatTemplate, Message, Piece, get_template, template_names

__all__ = ["ChatTemplate", "Message", "Piece", "get_template", "template_names"]
