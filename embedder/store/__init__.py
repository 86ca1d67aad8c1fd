"""The model store: files under the models root (`files`), Hub downloads (`downloads`) and
their progress records (`progress`)."""
