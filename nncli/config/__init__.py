"""The configuration: YAML files (`yamlsource`) turned into validated, frozen dataclasses
(`schema`), every error located at its file, line and YAML path."""
