"""INT8 graph forms the bench sets beside the recipe's file (tried, not served): each answers
"would this form be faster on this CPU?" in `forms.recipe_forms`. The service never imports them.
"""
