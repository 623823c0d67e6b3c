// Lint. The layering rules (which module may import which) are not here: they live in
// .dependency-cruiser.cjs as data, checked by `npm run lint:deps` and by test/layering/.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import jsdoc from 'eslint-plugin-jsdoc';

export default tseslint.config(
  { ignores: ['scratch/**', 'dist/**', 'node_modules/**', '.lab/**', '.lab-cache/**', 'coverage/**', 'data/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', URL: 'readonly', AbortSignal: 'readonly', fetch: 'readonly', Response: 'readonly', structuredClone: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
    },
  },
  {
    // CommonJS configuration files (.dependency-cruiser.cjs).
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { module: 'writable', require: 'readonly' } },
  },
  {
    // Configuration is read once, in src/config.ts (and the CLI entry), and passed in.
    files: ['src/**/*.ts'],
    ignores: ['src/config.ts', 'src/cli.ts', 'src/lab/**'],
    rules: {
      'no-restricted-syntax': ['error', { selector: "MemberExpression[object.name='process'][property.name='env']", message: 'read configuration in src/config.ts and pass it in' }],
    },
  },
  {
    // TSDoc on the public API of src/: exported functions, classes, interfaces, type aliases and enums, and
    // the public methods of exported classes. An error: src/ carries it everywhere, and must keep doing so.
    files: ['src/**/*.ts'],
    plugins: { jsdoc },
    settings: { jsdoc: { mode: 'typescript' } },
    rules: {
      'jsdoc/require-jsdoc': ['error', {
        publicOnly: { esm: true },
        require: { FunctionDeclaration: true, ClassDeclaration: true, ArrowFunctionExpression: true, FunctionExpression: false, MethodDefinition: false },
        contexts: [
          'TSInterfaceDeclaration',
          'TSTypeAliasDeclaration',
          'TSEnumDeclaration',
          // Public methods only: TS `private`/`protected` and `#private` members are not the API.
          'MethodDefinition[kind!="constructor"]:not([accessibility="private"]):not([accessibility="protected"]):not([key.type="PrivateIdentifier"])',
        ],
        checkConstructors: false,
        // No fixer: `eslint --fix` must not insert empty comment blocks.
        enableFixer: false,
      }],
    },
  },
);
